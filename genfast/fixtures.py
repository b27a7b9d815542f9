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


class MissingFixture(KeyError):
    """Asked for an expected output the learner install does not ship (a case only the grader,
    which has the reference, can check)."""

    def __str__(self) -> str:
        return self.args[0]


def load(lab: str, key: str, what: str | None = None):
    """The fixture `key` of `lab` (tensors on the CPU; a fresh copy, so a check cannot change it).

    `what` names the case in the message when the fixture is not shipped."""
    data = _load(lab)
    if key not in data:
        raise MissingFixture(f"no expected output is shipped for {what or repr(key)}: the shipped checks cover the "
                             f"lab's own cases (the grader checks others against the reference)")
    return _copy(data[key])


def _copy(value):
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_copy(v) for v in value)
    return value
