"""One neuron and one layer in the Shakespeare model: the feature, neuron search, ablation and steering
hooks, and the losses the lab measures.

- a neuron: the MLP neuron whose activation best separates positions with and without a feature;
  ablate it by ZERO (an activation it never has: off-distribution) or by its MEAN (removes only the
  information it carries) and measure what changes;
- a direction (difference of means, and its removal by projection: lab 07's exercise): steering
  adds alpha * d everywhere; subtracting d shifts every position, also those without the feature.
The feature here is visible in Shakespeare text: 'inside a speaker name' (the upper-case line before ':').
"""
from __future__ import annotations

import re

import torch


def steer_hook(direction, alpha):
    return lambda h, _: h + alpha * direction


def subtract_hook(direction):
    return lambda h, _: h - direction


def neuron_hook(neuron: int, value=0.0):
    """For blocks.{l}.mlp.hook_post: set one neuron to `value` (0: zero ablation; its mean: mean ablation)."""
    def hook(a, _):
        a = a.clone()
        a[..., neuron] = value
        return a
    return hook


def best_neuron(acts: torch.Tensor, labels: torch.Tensor):
    """(index, correlation) of the neuron whose activation (N, n) correlates most with labels (N,)."""
    a = acts - acts.mean(0)
    y = labels.float() - labels.float().mean()
    corr = (a * y[:, None]).sum(0) / (a.norm(dim=0) * y.norm() + 1e-12)
    i = int(corr.abs().argmax())
    return i, corr[i].item()


SPEAKER_LINE = re.compile(r"^[A-Z][A-Z .'-]*:$", re.M)


def speaker_mask(text: str) -> torch.Tensor:
    """(len(text),) bool: True on the characters of speaker names (the upper-case line before ':')."""
    mask = torch.zeros(len(text), dtype=torch.bool)
    for m in SPEAKER_LINE.finditer(text):
        mask[m.start():m.end() - 1] = True
    return mask


def shakespeare_windows(tok, n=48, T=128, split="val", seed=0):
    """(tokens (n, T), speaker mask (n, T)) from windows of the held-out plays."""
    from genfast.tinylm.data import corpus
    text = corpus()[0 if split == "train" else 1]
    mask = speaker_mask(text)
    gen = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(text) - T, (n,), generator=gen).tolist()
    return (torch.stack([tok.encode(text[s:s + T]) for s in starts]),
            torch.stack([mask[s:s + T] for s in starts]))


def next_char_loss(model, tokens, fwd_hooks=()):
    """(B, T - 1) next-character loss (nats) with the given hooks."""
    with torch.no_grad():
        logits = model.run_with_hooks(tokens, fwd_hooks)
    return -logits[:, :-1].log_softmax(-1).gather(-1, tokens[:, 1:, None])[..., 0]


def upper_mass(model, tokens, upper_ids, fwd_hooks=()):
    """(B, T): probability the model gives to an upper-case next character."""
    with torch.no_grad():
        logits = model.run_with_hooks(tokens, fwd_hooks)
    return logits.softmax(-1)[..., upper_ids].sum(-1)
