"""Data for linear probes: is a property of the input linearly readable from a layer's activations?

The probe (closed-form ridge on +-1 targets, a bias column appended) and its accuracy are lab 07's
exercise; here are the property and the activations it is fitted on. Accuracy alone proves little: a
probe can *learn* the task itself if it is expressive enough, or read an easier correlate, so the lab
compares it with controls: random labels (what memorisation alone gives on the test split: ~chance)
and a randomly initialised model of the same shape (what the architecture gives without training).
"""
from __future__ import annotations

import torch

from . import tasks
from .lens import resid_names


def prev_token_probe_data(n: int, T: int = 24, seed: int = 0, vocab: int = 32):
    """Random sequences (n, T) after BOS, and per position t >= 2 the label 'the PREVIOUS token is in the
    lower half of the vocabulary' (n, T), -1 where undefined. A token's own embedding says nothing about
    its neighbour: the information must be moved there by attention (a previous-token head)."""
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, vocab, (n, T), generator=gen)
    tokens[:, 0] = tasks.BOS
    y = torch.full((n, T), -1)
    y[:, 2:] = (tokens[:, 1:-1] < vocab // 2).long()
    return tokens, y


@torch.no_grad()
def layer_features(model, tokens, y):
    """({name: (N, d)}, labels (N,)): the residual stream before block 0 and after every block at
    every position where y >= 0."""
    keep = y >= 0
    names = resid_names(model)
    states = []                                          # one per name, in forward order
    model.run_with_hooks(tokens, [(name, lambda x, _: states.append(x[keep])) for name in names])
    return dict(zip(names, states)), y[keep]
