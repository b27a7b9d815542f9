"""Linear probes (lab 07's answers): is a property of the input linearly readable from a layer's activations?

A probe is fitted in closed form (ridge regression on +-1 targets, a bias column appended) on a train
split and scored on a test split. Its selectivity (Hewitt and Liang 2019) is its accuracy on the real
task minus its accuracy on a control task: labels that are a fixed random function of the input's type,
fitted on the train split's control labels and scored on the held-out split's control labels. The
data (`prev_token_probe_data`, `control_task`, `layer_features`) are the learner's:
genfast.interp.probes.
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


def probe_selectivity(X, y, y_control, n_train: int, lam: float = 1e-2):
    """(real-task accuracy, control-task accuracy, selectivity = their difference), both on the rows
    after n_train. Each probe is fitted on the first n_train rows of ITS labels and scored against
    ITS labels on the held-out rows: scoring the control probe against y would read ~0.5 whatever
    the representation holds."""
    acc = probe_accuracy(fit_probe(X[:n_train], y[:n_train], lam), X[n_train:], y[n_train:])
    ctrl = probe_accuracy(fit_probe(X[:n_train], y_control[:n_train], lam), X[n_train:], y_control[n_train:])
    return acc, ctrl, acc - ctrl


def probe_by_layer(feats: dict, y, controls, n_train: int, lam=1e-2):
    """{name: (real-task accuracy, control-task accuracy, selectivity)} for every layer, the control
    figures averaged over the control tasks `controls` (a list of (N,) label tensors)."""
    out = {}
    for name, X in feats.items():
        rows = torch.tensor([probe_selectivity(X, y, c, n_train, lam) for c in controls])
        out[name] = tuple(rows.mean(0).tolist())
    return out
