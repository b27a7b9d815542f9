"""A direction for a feature (lab 07's answers): difference of means, and its removal by projection.

- difference of means d = mean(h | feature) - mean(h | no feature) in one layer;
- removal either SUBTRACTS d (shifts every position, also those without the feature) or PROJECTS it
  out, h - (h . u) u with u = d / |d| (sets the component to 0).
The feature (speaker names), neurons, steering and the losses are the learner's: genfast.interp.steering.
"""
from __future__ import annotations

import torch


def diff_of_means(acts: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """acts (N, d), labels (N,) in {0, 1} -> mean(acts | 1) - mean(acts | 0), (d,)."""
    labels = labels.bool()
    return acts[labels].mean(0) - acts[~labels].mean(0)


def project_out(h: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """h (..., d) minus its component along `direction` (any norm)."""
    u = direction / direction.norm()
    return h - (h @ u)[..., None] * u


def project_hook(direction):
    return lambda h, _: project_out(h, direction)
