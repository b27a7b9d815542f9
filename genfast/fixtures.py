"""Expected outputs shipped with the labs, for visible checks whose reference would be the answer.

Where a lab's spec *is* what the learner writes (naive attention, top-p, a KV press), the
learner install cannot hold it; it holds what it returns on a few fixed inputs instead
(CS336's tests/fixtures). The instructor's `kernels/fixtures/<lab>.py` computes them with the
references; `python -m autograder fixtures` writes them to genfast/fixtures/<lab>.pt, and a
test checks that the saved file matches a fresh build.
"""
from __future__ import annotations

import functools
from pathlib import Path

import torch

FOLDER = Path(__file__).parent / "fixtures"


def path(lab: str) -> Path:
    return FOLDER / f"{lab}.pt"


@functools.cache
def _load(lab: str) -> dict:
    if not path(lab).exists():
        raise FileNotFoundError(f"no fixtures for {lab} ({path(lab)}); the instructor builds them with "
                                f"`python -m autograder fixtures {lab}`")
    return torch.load(path(lab), weights_only=True)


def load(lab: str, key: str):
    """The fixture `key` of `lab` (tensors on the CPU; a fresh copy, so a check cannot change it)."""
    value = _load(lab)[key]
    return _copy(value)


def _copy(value):
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_copy(v) for v in value)
    return value
