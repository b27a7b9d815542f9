"""Timing kernels on a GPU, and turning a speed ratio into points, against the known cheats.

Speed is only meaningful on a real GPU, and only as a ratio to the reference kernel timed in
the same process: clocks, drivers and neighbours differ between machines, a ratio in one run
does not. Kernel leaderboards (GPU MODE's KernelBot, KernelBench) have seen every way to fake
speed, so `speed_points` holds against them:

- fresh inputs for every timed call, made outside the timed window from a seed drawn at
  random when timing starts (a kernel that caches its output by pointer or content gains
  nothing); the learner's and the reference's calls get the same inputs;
- the outputs of timed calls checked against the reference (a random sample that includes the
  last call), with a relative error that an all-zero or constant output cannot pass;
- the inputs compared before and after each checked call (writing into them is caught);
- a device-wide synchronize inside every timed window, and the CUDA-event time cross-checked
  against host wall time: work on another stream, or a faked event clock, is timed by the host;
- a speed-up beyond PLAUSIBLE_SPEEDUP over the reference (or faster than the roofline, when the
  kernel's bytes or FLOPs are given) earns nothing and is listed "for review";
- the GPU held exclusively while anything is timed (a lock file per device), so two grading
  workers on one GPU never time at once.

On a CPU the speed cells say they were skipped and award nobody any points. Everything that
touches the GPU goes through a `Device`, so the logic is tested on a CPU with a simulated one.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import random
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import checks, runtime

FULL_POINTS_AT = 0.9   # learner within 10% of the reference: all speed points
ZERO_POINTS_AT = 0.25  # 4x slower than the reference or worse: none
PLAUSIBLE_SPEEDUP = 3.0  # faster than 3x the reference: no points, for an instructor's review
L2_FLUSH_BYTES = 256 * 1024 * 1024  # larger than any current GPU's L2 cache
CHECKED_CALLS = 3      # timed calls whose outputs are checked, per function (the last one always)
HOST_SLACK_MS = 0.05   # launch overhead the host clock may see beyond the events
LOCK_DIR = os.environ.get("COURSE_GPU_LOCK_DIR", "/tmp")


@dataclass
class Timing:
    median_ms: float
    p20_ms: float
    p80_ms: float

    @property
    def spread(self) -> float:
        """Inter-quintile range relative to the median: how much repetitions disagree."""
        return (self.p80_ms - self.p20_ms) / self.median_ms if self.median_ms else 0.0

    def __str__(self) -> str:
        return f"{self.median_ms * 1e3:9.1f} us  (spread {self.spread * 100:4.1f}%)"

    @classmethod
    def of(cls, ms: list[float]) -> "Timing":
        return cls(statistics.median(ms), _quantile(ms, 0.2), _quantile(ms, 0.8))


def _quantile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


class Device:
    """What timing needs from a GPU. Tests pass a simulated one."""

    def __init__(self, index: int = 0):
        self.index = index
        self._flush = None

    def synchronize(self) -> None:
        import torch
        torch.cuda.synchronize(self.index)  # every stream of the device, not only the current one

    def event(self):
        import torch
        return torch.cuda.Event(enable_timing=True)

    def flush_l2(self) -> None:
        import torch
        if self._flush is None:
            self._flush = torch.empty(L2_FLUSH_BYTES // 4, dtype=torch.int32, device=f"cuda:{self.index}")
        self._flush.zero_()

    @staticmethod
    def host_ms() -> float:
        return time.perf_counter() * 1e3

    @contextlib.contextmanager
    def exclusive(self):
        """Hold this GPU alone while timing: one lock file per device, shared by every process."""
        path = Path(LOCK_DIR) / f"course-gpu-{self.index}.lock"
        try:
            handle = open(path, "a+")
        except OSError:  # a read-only place: the lock file was made before (the sandbox)
            handle = open(path)
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


_device: Device | None = None


def device() -> Device:
    global _device
    if _device is None:
        _device = Device()
    return _device


def flush_l2() -> None:
    device().flush_l2()


def randn(*shape, seed: int, dtype=None, scale: float = 1.0):
    """Fresh random input made on the GPU itself (fast enough to make one per timed call)."""
    import torch
    gen = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(*shape, generator=gen, device="cuda") * scale
    return x.to(dtype) if dtype is not None else x


def time_gpu(fn: Callable, *, warmup: int = 10, reps: int = 50, flush: bool = True, dev: Device | None = None) -> Timing:
    """Median time of `fn()` on the GPU (for benchmarks of trusted code: no defences)."""
    dev = dev or device()
    for _ in range(warmup):
        fn()
    dev.synchronize()
    starts = [dev.event() for _ in range(reps)]
    ends = [dev.event() for _ in range(reps)]
    for start, end in zip(starts, ends):
        if flush:
            dev.flush_l2()
        start.record()
        fn()
        end.record()
    dev.synchronize()
    return Timing.of([s.elapsed_time(e) for s, e in zip(starts, ends)])


def time_pair(learner: Callable, reference: Callable, *, rounds: int = 5, reps: int = 30):
    """Time two trusted zero-argument functions in interleaved rounds (benchmarks only)."""
    learner_ms, reference_ms = [], []
    for _ in range(rounds):
        learner_ms.append(time_gpu(learner, reps=reps).median_ms)
        reference_ms.append(time_gpu(reference, reps=reps).median_ms)
    return Timing(statistics.median(learner_ms), min(learner_ms), max(learner_ms)), \
        Timing(statistics.median(reference_ms), min(reference_ms), max(reference_ms))


def points_for_ratio(ratio: float, points: float) -> float:
    """Linear partial credit between ZERO_POINTS_AT and FULL_POINTS_AT (ratio = t_ref / t_yours)."""
    fraction = (ratio - ZERO_POINTS_AT) / (FULL_POINTS_AT - ZERO_POINTS_AT)
    return round(points * min(1.0, max(0.0, fraction)), 2)


# The defended timing --------------------------------------------------------------------
class Cheat(Exception):
    """A timed call did something a kernel must not do (wrong output, changed inputs)."""


def _call(fn: Callable, args):
    if isinstance(args, dict):
        return fn(**args)
    return fn(*args) if isinstance(args, tuple) else fn()


def _clone(value):
    import torch
    if dataclasses.is_dataclass(value) and not isinstance(value, type):  # a quantized cache, say
        return dataclasses.replace(value, **{f.name: _clone(getattr(value, f.name)) for f in dataclasses.fields(value)
                                             if f.init})
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, dict):
        return {k: _clone(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_clone(v) for v in value)
    return value


def _unchanged(before, after) -> bool:
    import torch
    if dataclasses.is_dataclass(before) and not isinstance(before, type):
        return all(_unchanged(getattr(before, f.name), getattr(after, f.name)) for f in dataclasses.fields(before))
    if isinstance(before, torch.Tensor):
        return isinstance(after, torch.Tensor) and torch.equal(before, after)
    if isinstance(before, dict):
        return all(_unchanged(before[k], after[k]) for k in before)
    if isinstance(before, (list, tuple)):
        return all(_unchanged(b, a) for b, a in zip(before, after))
    return True


def _relative_error(actual, expected) -> float:
    """max |a - e| / max |e| over the output (tuples: the worst part); inf for a wrong shape."""
    import torch
    if isinstance(expected, (tuple, list)):
        if not isinstance(actual, (tuple, list)) or len(actual) != len(expected):
            return float("inf")
        return max(_relative_error(a, e) for a, e in zip(actual, expected))
    if not isinstance(actual, torch.Tensor) or actual.shape != expected.shape:
        return float("inf")
    a, e = actual.detach().double(), expected.detach().double()
    if e.numel() == 0:
        return 0.0
    scale = e.abs().max().clamp_min(1e-12)
    return float(((a - e).abs().nan_to_num(nan=float("inf"))).max() / scale)


@dataclass
class Run:
    """One function's timed calls: event and host times per call, and what was checked."""
    event_ms: list[float] = field(default_factory=list)
    host_ms: list[float] = field(default_factory=list)

    @property
    def clock_disagrees(self) -> bool:
        """The host saw much more time than the events: work outside the timed stream, or a
        faked event clock."""
        excess = [h - e for h, e in zip(self.host_ms, self.event_ms)]
        return statistics.median(excess) > max(HOST_SLACK_MS, 0.25 * statistics.median(self.host_ms))

    def timing(self) -> Timing:
        return Timing.of(self.host_ms if self.clock_disagrees else self.event_ms)


def timed_calls(fn: Callable, make_inputs: Callable, seeds: list[int], *, reference: Callable, checked: set[int],
                rtol: float, dev: Device) -> Run:
    """Call `fn` on fresh inputs for each seed, timing each call between events and a host
    clock around a device-wide synchronize; check the outputs of the `checked` calls."""
    run = Run()
    for i, seed in enumerate(seeds):
        args = make_inputs(seed)  # outside the timed window
        saved = _clone(args) if i in checked else None
        dev.flush_l2()
        dev.synchronize()
        start, end = dev.event(), dev.event()
        host_start = dev.host_ms()
        start.record()
        out = _call(fn, args)
        end.record()
        dev.synchronize()
        run.host_ms.append(dev.host_ms() - host_start)
        run.event_ms.append(start.elapsed_time(end))
        if saved is not None:
            if not _unchanged(saved, args):
                raise Cheat(f"timed call {i + 1} wrote into its inputs")
            error = _relative_error(out, _call(reference, saved))
            if not error <= rtol:
                raise Cheat(f"timed call {i + 1} returned a wrong result (relative error {error:.3g}, "
                            f"allowed {rtol:g})")
    return run


@dataclass
class SpeedResult:
    points: float
    ratio: float | None = None
    learner: Timing | None = None
    reference: Timing | None = None
    review: str = ""       # why an instructor should look at it (the points are 0 then)
    message: str = ""


def measure(learner: Callable, reference: Callable, make_inputs: Callable, *, points: float, rtol: float = 1e-2,
            rounds: int = 5, reps: int = 10, warmup: int = 3,
            roofline_ms: float | None = None, dev: Device | None = None, seed: int | None = None) -> SpeedResult:
    """Speed points for `learner(*make_inputs(seed))` against `reference(...)`, defended."""
    dev = dev or device()
    rng = random.Random(seed if seed is not None else random.SystemRandom().randrange(2**62))
    runs = {"learner": Run(), "reference": Run()}
    with dev.exclusive():
        try:
            for fn in (learner, reference):  # warm-up: compile and autotune outside the timing
                for _ in range(warmup):
                    _call(fn, make_inputs(rng.randrange(2**31)))
            dev.synchronize()
            for r in range(rounds):  # interleaved, so clock changes hit both alike
                seeds = [rng.randrange(2**31) for _ in range(reps)]
                checked = {reps - 1} | set(rng.sample(range(reps), min(CHECKED_CALLS, reps) - 1))
                for name, fn in (("learner", learner), ("reference", reference)):
                    part = timed_calls(fn, make_inputs, seeds, reference=reference,
                                       checked=checked if name == "learner" else set(), rtol=rtol, dev=dev)
                    runs[name].event_ms += part.event_ms
                    runs[name].host_ms += part.host_ms
        except Cheat as exc:
            return SpeedResult(0.0, message=f"no speed points: {exc}")
        except Exception as exc:  # a crashing kernel earns no speed points
            return SpeedResult(0.0, message=f"no speed points: the kernel raised {type(exc).__name__}: {exc}")
    yours, ref = runs["learner"].timing(), runs["reference"].timing()
    ratio = ref.median_ms / yours.median_ms if yours.median_ms > 0 else float("inf")
    result = SpeedResult(points_for_ratio(ratio, points), ratio, yours, ref)
    if runs["learner"].clock_disagrees:
        result.message = "the host clock saw more time than the CUDA events (work outside the timed stream?): " \
                         "timed by the host clock"
    if ratio > PLAUSIBLE_SPEEDUP:
        result.points, result.review = 0.0, f"{ratio:.1f}x faster than the reference (limit {PLAUSIBLE_SPEEDUP}x)"
    elif roofline_ms is not None and yours.median_ms < 0.9 * roofline_ms:
        result.points, result.review = 0.0, (f"{yours.median_ms:.3f} ms is below the roofline time "
                                             f"{roofline_ms:.3f} ms of its bytes and FLOPs")
    return result


def speed_points(learner: Callable, reference: Callable | None, *, points: float, name: str = "kernel",
                 inputs: Callable | None = None, rtol: float = 1e-2, roofline_ms: float | None = None,
                 kernel=None, signature=None) -> float:
    """Speed points for the learner's kernel against the reference kernel.

    `inputs(seed)` makes the arguments of one call (a tuple or a dict), fresh for every timed
    call; without it both functions take no arguments and are timed on fixed inputs.
    Returns a float, so an nbgrader test cell that ends with this call gets partial credit.
    The reference kernel is the instructor's: a learner's own run passes reference=None and
    sees its kernel's time alone; in a grading kernel that call is silent, because the
    grader's own call after it (with the reference) is the one that counts.
    With no GPU, a learner's run is shown what the learner's @triton.jit kernel of `signature` (a
    genfast.compile_info.KernelSignature; found by name where `kernel`, else `learner`, was
    defined) compiles to on real GPUs, next to the reference's figures
    (COURSE_COMPILE_FEEDBACK=0 turns that off).
    """
    if reference is None and os.environ.get("COURSE_GRADING") == "1":
        return 0.0
    if not runtime.on_gpu():
        print(f"Speed check for {name} skipped: no GPU here, the kernel ran in the CPU "
              f"interpreter, where time says nothing about GPU speed.\n"
              f"0 / {points} speed points now; they are awarded when the lab is graded on a GPU.")
        if signature is not None and os.environ.get("COURSE_GRADING") != "1" \
                and os.environ.get("COURSE_COMPILE_FEEDBACK") != "0":
            print_compile_feedback(kernel or learner, signature)
        return 0.0
    make_inputs = inputs or (lambda seed: ())
    if reference is None:
        args = make_inputs(0)
        yours = time_gpu(lambda: _call(learner, args))
        print(f"{name}\n  yours     {yours}\n  the reference kernel is timed when your instructor grades "
              f"the lab on a GPU: 0 / {points} points here")
        return 0.0
    result = measure(learner, reference, make_inputs, points=points, rtol=rtol, roofline_ms=roofline_ms)
    if result.ratio is None:
        print(f"Speed check for {name}: {result.message}")
        return 0.0
    print(f"{name}\n  yours     {result.learner}\n  reference {result.reference}\n"
          f"  speed ratio {result.ratio:.2f}x of the reference -> {result.points} / {points} points "
          f"(full at {FULL_POINTS_AT}x, none below {ZERO_POINTS_AT}x)")
    if result.message:
        print(f"  note: {result.message}")
    if result.review:
        print(f"  FOR REVIEW: {result.review}; no points until an instructor has looked at it")
    return result.points


def print_compile_feedback(defined_by: Callable, signature) -> None:
    """What the learner's kernel compiles to on an A100 and an H100, next to the reference."""
    from . import compile_info
    kernel = compile_info.find_kernel(defined_by, signature)
    if kernel is None:
        print(f"\n(no compile report: no @triton.jit function named {signature.name} where "
              f"{getattr(defined_by, '__name__', 'your function')} is defined)")
        return
    print(f"\nWhat your {signature.name} compiles to on real GPUs (built here ahead of time, "
          f"nothing runs; this takes a few seconds per configuration):", flush=True)
    try:
        print(compile_info.laptop_report(kernel, signature))
    except Exception as exc:  # feedback only: it never costs the learner anything
        print(f"  (no compile report: {type(exc).__name__}: {compile_info.first_line(exc)})")
