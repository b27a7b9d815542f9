"""Linear probes (lab 07's answers): is a property of the input linearly readable from a layer's activations?

A probe is fitted in closed form (ridge regression on +-1 targets, a bias column appended) on a train
split and scored on a test split, against controls (random labels; an untrained model). The data
(`prev_token_probe_data`, `layer_features`) are the learner's: genfast.interp.probes.
"""
from __future__ import annotations

import torch


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
