"""Is this the environment the course was tested with? One call, for the first cell of every lab.

`genfast/environment.lock` holds the exact versions the test suite ran with (written by
`python -m autograder lock` from the course's own environment; `make setup` installs with it as
pip constraints, so every machine gets the same versions). `check()` compares what is installed
with it and prints one line per thing that matters: torch, triton and numba against the lock,
whether the Triton interpreter works, and whether a GPU is there and will be used.
Version drift is the most common failure of GPU-puzzle courses: this says so at the first cell,
not as a strange error in the tenth.
"""
from __future__ import annotations

import importlib.metadata
import os
import re
from pathlib import Path

LOCK = Path(__file__).parent / "environment.lock"
WATCHED = ("torch", "triton", "numba", "numba-cuda", "nbgrader", "jupyterlab")


def locked_versions(path: Path = LOCK) -> dict[str, str]:
    """{package name (lower case): version} from the lock (pip's `name==version` lines)."""
    out = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        match = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;#]+)", line.strip())
        if match:
            out[match.group(1).lower().replace("_", "-")] = match.group(2)
    return out


def installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _base(version: str) -> str:
    return version.split("+")[0]  # torch 2.13.0+cpu and 2.13.0+cu128 are the same release


def problems(locked: dict[str, str] | None = None) -> list[str]:
    """What differs from the lock, one sentence each (empty: all as tested)."""
    locked = locked_versions() if locked is None else locked
    found = []
    for name in WATCHED:
        want, have = locked.get(name), installed_version(name)
        if want is None:
            continue
        if have is None:
            found.append(f"{name} is not installed (the course was tested with {want})")
        elif _base(have) != _base(want):
            found.append(f"{name} {have} is installed; the course was tested with {want}")
    return found


def interpreter_works() -> tuple[bool, str]:
    """Run a two-line Triton kernel (in the interpreter when there is no GPU)."""
    try:
        import torch
        import triton
        import triton.language as tl

        @triton.jit
        def _double(x_ptr, n, BLOCK: tl.constexpr):
            offs = tl.arange(0, BLOCK)
            tl.store(x_ptr + offs, tl.load(x_ptr + offs, mask=offs < n) * 2, mask=offs < n)

        from . import runtime
        x = torch.arange(5, dtype=torch.float32, device=runtime.device())
        _double[(1,)](x, 5, BLOCK=8)
        ok = x.cpu().tolist() == [0.0, 2.0, 4.0, 6.0, 8.0]
        return ok, "a Triton kernel ran" if ok else "a Triton kernel ran but gave a wrong answer"
    except Exception as exc:
        return False, f"a Triton kernel failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def check(verbose: bool = True) -> bool:
    """Print what this machine will do and what differs from the tested environment; True if all is as tested."""
    from . import runtime
    lines = [f"environment: {runtime.describe()}"]
    versions = ", ".join(f"{n} {installed_version(n) or 'missing'}" for n in ("torch", "triton", "numba"))
    lines.append(f"  versions: {versions}")
    ok_kernel, kernel_msg = interpreter_works()
    mode = "on the GPU" if runtime.on_gpu() else "in the CPU interpreter (TRITON_INTERPRET=1)"
    lines.append(f"  kernels run {mode}: {kernel_msg}")
    issues = problems()
    if not ok_kernel:
        issues.append("Triton cannot run a kernel here: reinstall with `make setup` (or the course's environment.yml)")
    if os.environ.get("TRITON_INTERPRET") == "1" and runtime.cuda_available():
        lines.append("  note: a GPU is present but TRITON_INTERPRET=1 is set: kernels run in the interpreter")
    for issue in issues:
        lines.append(f"  WARNING: {issue}")
    if issues:
        lines.append("  fix: `make setup` installs the tested versions (genfast/environment.lock)")
    if verbose:
        print("\n".join(lines))
    return not issues
