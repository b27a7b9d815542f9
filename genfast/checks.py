"""Correctness checks shared by every lab's test cells.

A check runs the learner's function on a list of cases, compares each output with a
plain PyTorch reference and, on the first failure, raises `CheckFailed` with what a
learner needs to fix it: the failing case, max abs/rel error, the first bad index, the
values there, and a hint. It never raises a bare AssertionError.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch

from . import runtime
from .policy import PolicyViolation

# (atol, rtol) per dtype: loose enough for a different summation order, tight enough
# to catch a missing rescale or a wrong scale factor.
TOLERANCES = {
    torch.float32: (1e-5, 1e-4),
    torch.float16: (1e-2, 1e-2),
    torch.bfloat16: (2e-2, 2e-2),
}


# What a GPU does differently from the CPU interpreter, which the tolerances above allow for:
# tensor cores multiply fp16/bf16 (or, for fp32 inputs, TF32: 10-bit mantissas, Triton's tl.dot
# default, unless input_precision="ieee") and accumulate in fp32, in another order.
DOT_PRECISION = {
    torch.float32: "fp32: the CPU interpreter multiplies exactly in fp32 (on a GPU, fp32 inputs to tl.dot "
                   "become TF32 with 10-bit mantissas unless input_precision=\"ieee\")",
    torch.float16: "fp16 inputs on tensor cores, fp32 accumulation",
    torch.bfloat16: "bf16 inputs on tensor cores, fp32 accumulation",
}


def tf32_dot_error(K: int, *, rounding: str = "nearest", rms_product: float = 1.0) -> float:
    """Expected RMS absolute error of a K-long fp32 dot product whose inputs are cut to TF32.

    TF32 keeps 10 of fp32's 23 mantissa bits. Rounding x to nearest gives x(1 + d) with d at most
    2^-11; with mantissas spread log-uniformly (as for Gaussian data) E[d^2] = 2^-20 / (32 ln 2).
    Truncation (dropping the 13 low bits, as the tensor core does with the raw fp32 bits Triton's
    tl.dot passes it) has |d| up to 2^-10 and a mean: E[d] = -2^-10 / (4 ln 2),
    E[d^2] = 2^-20 / (8 ln 2). A product a*b carries d_a + d_b, about 2^-11 relative (0.60 x 2^-11
    RMS rounded, 1.58 x 2^-11 truncated). For independent zero-mean inputs the K product errors add
    like a random walk: the error grows like sqrt(K) * rms(a*b), as the result itself does, so
    relative to the result it stays about 2^-11 for any K. (Same-sign data, e.g. probabilities
    times positive values, adds the truncation bias E[d] coherently: that part grows like K.)
    The fp32 accumulation's own error (2^-24 per add) is about a thousand times smaller."""
    if rounding == "nearest":
        mean, second_moment = 0.0, 1 / (32 * math.log(2))
    elif rounding == "truncate":
        mean, second_moment = 1 / (4 * math.log(2)), 1 / (8 * math.log(2))
    else:
        raise ValueError(f"rounding is 'nearest' or 'truncate', not {rounding!r}")
    per_product = 2.0 ** -10 * math.sqrt(2 * second_moment + 2 * mean ** 2)  # E[(d_a + d_b)^2], a, b independent
    return per_product * math.sqrt(K) * rms_product


def precision(dtype, *, atol=None, rtol=None, dot=True) -> str:
    """One line that says in what precision a kernel is checked, and to what tolerance."""
    default_atol, default_rtol = TOLERANCES.get(dtype, (0.0, 0.0))
    atol, rtol = (default_atol if atol is None else atol), (default_rtol if rtol is None else rtol)
    where = "GPU" if runtime.on_gpu() else "CPU interpreter"
    kind = DOT_PRECISION.get(dtype, str(dtype)) if dot else str(dtype).replace("torch.", "")
    return f"precision ({where}): {kind}; checked to atol={atol:g}, rtol={rtol:g}"


class CheckFailed(AssertionError):
    """A failed check, with a message written for the learner."""


@dataclass
class Case:
    """One input to a check: a readable name and a function that builds the arguments."""
    name: str
    make_inputs: Callable[[], dict]


def randn(*shape, dtype=torch.float32, seed=0, scale=1.0) -> torch.Tensor:
    """Reproducible random input on the lab's device."""
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=gen) * scale).to(dtype=dtype, device=runtime.device())


def _fmt_index(flat_index: int, shape) -> str:
    idx = []
    for size in reversed(shape):
        idx.append(flat_index % size)
        flat_index //= size
    return "(" + ", ".join(str(i) for i in reversed(idx)) + ")"


def _describe(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"tensor of shape {tuple(x.shape)} and dtype {x.dtype}"
    return f"{type(x).__name__}"


def compare(actual, expected, *, atol=None, rtol=None, what="output", hint="") -> float:
    """Raise CheckFailed unless `actual` matches `expected`; return the max abs error."""
    __tracebackhide__ = True  # keep the learner's traceback short (IPython and pytest honour it)
    hint_line = f"\n  hint: {hint}" if hint else ""
    if not isinstance(actual, torch.Tensor):
        raise CheckFailed(f"{what}: expected a {_describe(expected)}, got {_describe(actual)}.{hint_line}")
    if actual.shape != expected.shape:
        raise CheckFailed(f"{what}: wrong shape {tuple(actual.shape)}, expected {tuple(expected.shape)}.{hint_line}")
    default_atol, default_rtol = TOLERANCES.get(expected.dtype, (0.0, 0.0))
    atol = default_atol if atol is None else atol
    rtol = default_rtol if rtol is None else rtol
    a = actual.detach().to("cpu", torch.float64).flatten()
    e = expected.detach().to("cpu", torch.float64).flatten()
    if a.numel() == 0:
        return 0.0
    nan_mismatch = torch.isnan(a) != torch.isnan(e)
    err = (a - e).abs().nan_to_num(nan=0.0, posinf=math.inf)
    # inf == inf counts as equal (a masked softmax may legitimately produce -inf logits)
    err = torch.where((a == e), torch.zeros_like(err), err)
    bad = nan_mismatch | (err > atol + rtol * e.abs().nan_to_num(nan=0.0, posinf=0.0))
    max_abs = err.max().item()
    if bad.any():
        first = int(bad.nonzero()[0])
        rel = (err / e.abs().clamp_min(1e-12)).max().item()
        raise CheckFailed(
            f"{what}: {int(bad.sum())} of {a.numel()} values are wrong.\n"
            f"  first bad index {_fmt_index(first, expected.shape)}: got {a[first].item():.6g}, "
            f"expected {e[first].item():.6g}\n"
            f"  max abs error {max_abs:.3g}, max rel error {rel:.3g} "
            f"(allowed: atol={atol:g}, rtol={rtol:g})" + hint_line
        )
    return max_abs


def call(fn: Callable, *args, name: str | None = None, case: str = "", hint: str = "", **kwargs):
    """Call the learner's `fn`, turning a crash into a CheckFailed that says what happened."""
    __tracebackhide__ = True
    name = name or getattr(fn, "__name__", "your function")
    try:
        return fn(*args, **kwargs)
    except CheckFailed:
        raise
    except PolicyViolation as exc:
        raise CheckFailed(str(exc)) from None
    except Exception as exc:
        # the released stub is `raise NotImplementedError()`; inside a Triton kernel the
        # compiler may wrap it in its own error, so look at the text as well as the type
        if isinstance(exc, NotImplementedError) or "NotImplementedError" in str(exc):
            raise CheckFailed(f"{name} is not implemented yet: replace `raise NotImplementedError()` "
                              f"under YOUR CODE HERE with your code.") from None
        where = f" on case '{case}'" if case else ""
        raise CheckFailed(f"{name} raised {type(exc).__name__}{where}: {exc}"
                          + (f"\n  hint: {hint}" if hint else "")) from exc


def check_function(fn: Callable, reference: Callable, cases: Iterable[Case], *,
                   atol=None, rtol=None, hint="", name=None) -> None:
    """Run `fn` and `reference` on every case and compare. Prints one line per case."""
    __tracebackhide__ = True
    name = name or getattr(fn, "__name__", "your function")
    cases = list(cases)
    for case in cases:
        inputs = case.make_inputs()
        actual = call(fn, name=name, case=case.name, hint=hint, **inputs)
        expected = reference(**inputs)
        max_abs = compare(actual, expected, atol=atol, rtol=rtol,
                          what=f"{name}, case '{case.name}'", hint=hint)
        print(f"  ok  {case.name:<44} max abs error {max_abs:.2e}")
    print(f"{name}: all {len(cases)} cases passed.")


def check_value(what: str, fn: Callable, *args, expected, rel=1e-9, hint="") -> None:
    """Check a plain Python result (a number or a tuple of numbers) of `fn(*args)`."""
    __tracebackhide__ = True
    got = call(fn, *args, name=what, hint=hint)
    as_tuple = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v,)
    ok = len(as_tuple(got)) == len(as_tuple(expected)) and all(
        isinstance(g, (int, float)) and abs(g - e) <= rel * abs(e)
        for g, e in zip(as_tuple(got), as_tuple(expected)))
    if not ok:
        raise CheckFailed(f"{what}: got {got!r}, expected {expected!r}" + (f"\n  hint: {hint}" if hint else ""))
    print(f"  ok  {what} = {got}")


def check_equal(actual, expected, *, what="output", hint="") -> None:
    """Exact comparison, for integer results such as sampled token ids."""
    __tracebackhide__ = True
    compare(actual, expected, atol=0.0, rtol=0.0, what=what, hint=hint)


def chi_square_pvalue(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """Pearson's chi-square goodness-of-fit p-value of observed `counts` against `probs`.

    Outcomes with tiny expected counts are pooled, as the test asks for (expected >= 5).
    """
    counts = counts.double().cpu()
    expected = probs.double().cpu() * counts.sum()
    if (counts[expected == 0] > 0).any():
        return 0.0  # sampled an outcome whose probability is zero
    order = torch.argsort(expected, descending=True)
    counts, expected = counts[order], expected[order]
    keep = expected >= 5
    obs = torch.cat([counts[keep], counts[~keep].sum().reshape(1)])
    exp = torch.cat([expected[keep], expected[~keep].sum().reshape(1)])
    obs, exp = obs[exp > 0], exp[exp > 0]
    stat = ((obs - exp) ** 2 / exp).sum()
    dof = max(len(obs) - 1, 1)
    return float(torch.special.gammaincc(torch.tensor(dof / 2.0, dtype=torch.float64), stat / 2.0))


def check_distribution(samples: torch.Tensor, probs: torch.Tensor, *, what="samples",
                       alpha=1e-3, hint="") -> float:
    """Check that integer `samples` look drawn from `probs` (chi-square test at level alpha)."""
    __tracebackhide__ = True
    counts = torch.bincount(samples.flatten().long().cpu(), minlength=probs.numel()).double()
    p = chi_square_pvalue(counts, probs)
    if p < alpha:
        top = torch.argsort(probs.cpu(), descending=True)[:5].tolist()
        n = counts.sum().item()
        table = ", ".join(f"{i}: {counts[i].item() / n:.3f} vs {probs[i].item():.3f}" for i in top)
        raise CheckFailed(f"{what} do not follow the expected distribution (chi-square p = {p:.2g} "
                          f"< {alpha:g}).\n  observed vs expected frequency of the likeliest "
                          f"outcomes: {table}" + (f"\n  hint: {hint}" if hint else ""))
    print(f"  ok  {what}: chi-square p = {p:.3f} over {int(counts.sum())} samples")
    return p


def passed(message: str) -> None:
    """Print a closing line on stdout (never stderr: nbgrader zeroes a cell that writes there)."""
    print(message, file=sys.stdout)
