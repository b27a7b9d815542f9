"""Timing kernels on a GPU, and turning a speed ratio into points.

Speed is only meaningful on a real GPU, and only as a ratio to the reference kernel
timed in the same process: clocks, drivers and neighbours differ between machines,
a ratio in one run does not. Timings use CUDA events, warm-up, many repetitions,
the median, and an L2 flush before every repetition so no kernel reads a warm cache.
On a CPU the speed cells say they were skipped and award nobody any points.
"""
from __future__ import annotations

import os
import statistics
from dataclasses import dataclass
from typing import Callable

from . import checks, runtime

FULL_POINTS_AT = 0.9   # learner within 10% of the reference: all speed points
ZERO_POINTS_AT = 0.25  # 4x slower than the reference or worse: none
L2_FLUSH_BYTES = 256 * 1024 * 1024  # larger than any current GPU's L2 cache

_flush_buffer = None


@dataclass
class Timing:
    median_ms: float
    p20_ms: float
    p80_ms: float

    @property
    def spread(self) -> float:
        """Inter-quintile range relative to the median: how much repetitions disagree."""
        return (self.p80_ms - self.p20_ms) / self.median_ms

    def __str__(self) -> str:
        return f"{self.median_ms * 1e3:9.1f} us  (spread {self.spread * 100:4.1f}%)"


def _quantile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def flush_l2() -> None:
    import torch
    global _flush_buffer
    if _flush_buffer is None:
        _flush_buffer = torch.empty(L2_FLUSH_BYTES // 4, dtype=torch.int32, device="cuda")
    _flush_buffer.zero_()


def time_gpu(fn: Callable, *, warmup: int = 10, reps: int = 50, flush: bool = True) -> Timing:
    """Median time of `fn()` on the GPU, from CUDA events around each call."""
    import torch
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for start, end in zip(starts, ends):
        if flush:
            flush_l2()
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    ms = [s.elapsed_time(e) for s, e in zip(starts, ends)]
    return Timing(statistics.median(ms), _quantile(ms, 0.2), _quantile(ms, 0.8))


def time_pair(learner: Callable, reference: Callable, *, rounds: int = 5, reps: int = 30):
    """Time two functions in interleaved rounds so clock changes hit both alike."""
    learner_ms, reference_ms = [], []
    for _ in range(rounds):
        learner_ms.append(time_gpu(learner, reps=reps).median_ms)
        reference_ms.append(time_gpu(reference, reps=reps).median_ms)

    def summary(ms):
        return Timing(statistics.median(ms), min(ms), max(ms))
    return summary(learner_ms), summary(reference_ms)


def points_for_ratio(ratio: float, points: float) -> float:
    """Linear partial credit between ZERO_POINTS_AT and FULL_POINTS_AT (ratio = t_ref / t_yours)."""
    fraction = (ratio - ZERO_POINTS_AT) / (FULL_POINTS_AT - ZERO_POINTS_AT)
    return round(points * min(1.0, max(0.0, fraction)), 2)


def speed_points(learner: Callable, reference: Callable | None, *, points: float, name: str = "kernel") -> float:
    """Speed points for `learner()` against `reference()` (both zero-argument callables).

    Returns a float, so an nbgrader test cell that ends with this call gets partial credit.
    The reference kernel is the instructor's: a learner's own run passes reference=None and
    sees its kernel's time alone; in a grading kernel that call is silent, because the
    grader's own call after it (with the reference) is the one that counts.
    """
    if reference is None and os.environ.get("COURSE_GRADING") == "1":
        return 0.0
    if not runtime.on_gpu():
        print(f"Speed check for {name} skipped: no GPU here, the kernel ran in the CPU "
              f"interpreter, where time says nothing about GPU speed.\n"
              f"0 / {points} speed points now; they are awarded when the lab is graded on a GPU.")
        return 0.0
    if reference is None:
        yours = time_gpu(learner)
        print(f"{name}\n  yours     {yours}\n  the reference kernel is timed when your instructor grades "
              f"the lab on a GPU: 0 / {points} points here")
        return 0.0
    try:
        checks.compare(learner(), reference(), what=f"{name} (speed run)")
    except Exception as exc:  # a wrong or crashing kernel earns no speed points
        print(f"Speed check for {name}: no points, the kernel is not correct on the timed input:\n{exc}")
        return 0.0
    yours, ref = time_pair(learner, reference)
    ratio = ref.median_ms / yours.median_ms
    earned = points_for_ratio(ratio, points)
    print(f"{name}\n  yours     {yours}\n  reference {ref}\n"
          f"  speed ratio {ratio:.2f}x of the reference -> {earned} / {points} points "
          f"(full at {FULL_POINTS_AT}x, none below {ZERO_POINTS_AT}x)")
    return earned
