"""Data for linear probes: is a property of the input linearly readable from a layer's activations?

The probe (closed-form ridge on +-1 targets, a bias column appended), its accuracy and its
selectivity are lab 07's exercise; here are the property, its control task and the activations the
probes are fitted on.

Accuracy alone proves little: a probe can *learn* the task itself if it is expressive enough, or read
an easier correlate. Two controls:
- a **control task** (Hewitt and Liang 2019, "Designing and Interpreting Probes with Control Tasks"):
  the property here is a function of one input, the previous token's TYPE (its id). The control
  gives every type a fixed random label instead, so it has the same structure (a function of the
  previous token) but means nothing. A probe trained on the control labels of the train split and
  scored on the control labels of the held-out split measures how well the probe can memorise
  type -> label maps from this representation. **Selectivity** = accuracy on the real task minus
  accuracy on the control task: high only when the representation makes the REAL property easier
  to read than an arbitrary one.
- a randomly initialised model of the same shape (what the architecture gives without training).
"""
from __future__ import annotations

import torch

from . import tasks
from .lens import resid_names


def type_labels(vocab: int = 32) -> torch.Tensor:
    """The real property as a function of the previous token's type: 1 for types 1..vocab/2 - 1 (the
    lower half; type 0 is BOS, never a previous token at t >= 2), 0 for the rest. (vocab,)"""
    return (torch.arange(vocab) < vocab // 2).long()


def prev_token_probe_data(n: int, T: int = 24, seed: int = 0, vocab: int = 32):
    """Random sequences (n, T) after BOS, and per position t >= 2 the label 'the PREVIOUS token is in the
    lower half of the vocabulary' (n, T), -1 where undefined. A token's own embedding says nothing about
    its neighbour: the information must be moved there by attention (a previous-token head)."""
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, vocab, (n, T), generator=gen)
    tokens[:, 0] = tasks.BOS
    y = torch.full((n, T), -1)
    y[:, 2:] = type_labels(vocab)[tokens[:, 1:-1]]
    return tokens, y


def control_task(tokens, y, seed: int, vocab: int = 32):
    """Hewitt and Liang's control task for `prev_token_probe_data`: labels (n, T), -1 where y is -1,
    that are a fixed random function of the previous token's type.

    Each of the types 1..vocab-1 gets a label drawn once (seeded) and kept wherever that type occurs,
    in the train and the held-out split alike. The labels are the real task's labels of the types,
    shuffled among the types: the same number of types per label (15 of 31 labelled 1), so the two
    tasks have the same class balance and differ only in WHICH types share a label. (Hewitt and Liang
    draw each type's label from the task's label distribution; shuffling keeps that distribution
    exactly.)"""
    gen = torch.Generator().manual_seed(seed)
    real = type_labels(vocab)[1:]                         # types 1..vocab-1 (type 0 = BOS never labelled)
    of_type = torch.zeros(vocab, dtype=torch.long)
    of_type[1:] = real[torch.randperm(vocab - 1, generator=gen)]
    control = torch.full_like(y, -1)
    control[:, 1:] = of_type[tokens[:, :-1]]              # the label of the previous token's type
    control[y < 0] = -1
    return control


@torch.no_grad()
def layer_features(model, tokens, y):
    """({name: (N, d)}, labels (N,)): the residual stream before block 0 and after every block at
    every position where y >= 0 (rows in (sequence, position) order, so the first rows are whole
    sequences: a train / test split by rows is a split by sequences)."""
    keep = y >= 0
    names = resid_names(model)
    states = []                                          # one per name, in forward order
    model.run_with_hooks(tokens, [(name, lambda x, _: states.append(x[keep])) for name in names])
    return dict(zip(names, states)), y[keep]
