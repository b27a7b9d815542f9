"""Linear probes: is a property of the input linearly readable from a layer's activations?

A probe is fitted in closed form (ridge regression on +-1 targets, a bias column appended) on a train
split and scored on a test split. Accuracy alone proves little: a probe can *learn* the task itself
if it is expressive enough, or read an easier correlate. So compare with controls:
- the same probe on random labels (what memorisation alone gives on the test split: ~chance);
- the same probe on a randomly initialised model of the same shape (what the architecture gives
  without training).
"""
from __future__ import annotations

import torch

from . import tasks


def fit_probe(X: torch.Tensor, y: torch.Tensor, lam: float = 1e-2) -> torch.Tensor:
    """Ridge probe. X (N, d) activations, y (N,) labels in {0, 1} -> w (d + 1,), last entry the bias.
    Minimises ||[X 1] w - (2y - 1)||^2 + lam * N * ||w||^2."""
    Xb = torch.cat([X, torch.ones(len(X), 1, dtype=X.dtype)], dim=1).double()
    t = (2.0 * y - 1.0).double()
    A = Xb.T @ Xb + lam * len(X) * torch.eye(Xb.shape[1], dtype=torch.float64)
    return torch.linalg.solve(A, Xb.T @ t).to(X.dtype)


def probe_accuracy(w: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of rows where sign([X 1] w) agrees with y (1 -> positive)."""
    pred = (X @ w[:-1] + w[-1]) > 0
    return (pred == y.bool()).float().mean().item()


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
    from .lens import resid_names
    _, cache = model.run_with_cache(tokens, names=resid_names(model))
    keep = y >= 0
    return {n: cache[n][keep] for n in resid_names(model)}, y[keep]


def probe_by_layer(feats: dict, y, n_train: int, lam=1e-2, seed=0):
    """{name: (test accuracy, test accuracy with random train labels)} for every layer."""
    gen = torch.Generator().manual_seed(seed)
    shuffled = y[torch.randperm(len(y), generator=gen)]
    out = {}
    for name, X in feats.items():
        acc = probe_accuracy(fit_probe(X[:n_train], y[:n_train], lam), X[n_train:], y[n_train:])
        ctrl = probe_accuracy(fit_probe(X[:n_train], shuffled[:n_train], lam), X[n_train:], y[n_train:])
        out[name] = (acc, ctrl)
    return out
