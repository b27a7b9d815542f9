"""`make gpu-check`: everything a GPU machine should prove, in one command of under 10 minutes.

On a machine with one NVIDIA GPU, torch and triton, and no network:

1. installs nbgrader and jupyterlab from wheels carried in `.whl/` if they are missing;
2. runs every reference kernel's checks compiled on the GPU (fp16/bf16 and the edge shapes:
   the kernel tests of every lab, which use the GPU when there is one);
3. prints the compile report for the kernels as they are (registers, spills, tensor cores);
4. prints `make bench`'s table (throughput against copy bandwidth or torch.matmul, and against
   the nearest PyTorch op);
5. grades the `reference` and `untouched` samples of every lab with the speed cells live;
6. times one speed cell (lab00's vector add, the reference kernel against itself) 10 times and
   reports the spread of its points;

and writes one markdown summary (grading/gpu-check.md unless --out says else). On a machine
without a GPU it says what it would run and exits 0.
"""
from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from genfast import runtime

from . import config

BUDGET_S = 570  # the whole check; each step gets what is left


@dataclass
class Step:
    title: str
    argv: list[str]
    timeout_s: int


def steps(python: str = sys.executable) -> list[Step]:
    kernel_tests = sorted(str(p.relative_to(config.ROOT)) for p in (config.ROOT / "tests").glob("test_*.py")
                          if p.name.startswith(("test_kernels_", "test_lab0")))
    return [
        Step("reference kernels on the GPU (the labs' kernel tests)",
             [python, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *kernel_tests,
              "-k", "not notebook and not grading"], 240),
        Step("compile report", [python, "-m", "autograder", "compile-report"], 120),
        Step("bench: reference kernels against the hardware limit", [python, "-m", "autograder", "bench"], 120),
        Step("reference and untouched samples of every lab, speed cells live",
             [python, "-m", "autograder", "grade", "--students", "reference,untouched"], 300),
        Step("stability: one speed cell graded 10 times", [python, "-m", "autograder.gpu_check", "--stability"], 90),
    ]


def carried_wheels() -> list[str]:
    """pip's command for the wheels in .whl/ when nbgrader or jupyterlab is missing, else []."""
    import importlib.util
    wheels = sorted((config.ROOT / ".whl").glob("*.whl"))
    missing = [m for m in ("nbgrader", "jupyterlab") if importlib.util.find_spec(m) is None]
    if not missing or not wheels:
        return []
    return [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", *map(str, wheels)]


def stability(runs: int = 10) -> list[tuple[float, float]]:
    """(points, ratio) of lab00's vector-add speed cell, the reference kernel against itself."""
    from genfast import bench
    from kernels import vector_add
    inputs = lambda seed: (bench.randn(2**26, seed=seed), bench.randn(2**26, seed=seed + 1))
    results = [bench.measure(vector_add.add, vector_add.add, inputs, points=1) for _ in range(runs)]
    return [(r.points, r.ratio) for r in results]


def run(out: Path | None = None) -> int:
    out = out or config.grading_dir() / "gpu-check.md"
    plan = steps()
    if not runtime.on_gpu():
        print("gpu-check: no GPU here, so nothing is run. On a GPU machine it runs, within "
              f"{BUDGET_S} s:")
        wheels = carried_wheels()
        if wheels:
            print(f"  - install the carried wheels: {' '.join(wheels[:6])} ...")
        for step in plan:
            print(f"  - {step.title} (at most {step.timeout_s} s): {' '.join(step.argv[1:])}")
        print(f"and writes the summary to {out}.")
        return 0
    start, lines, failed = time.time(), [f"# gpu-check on {runtime.describe()}", ""], 0
    wheels = carried_wheels()
    if wheels:
        subprocess.run(wheels, check=False)
    for step in plan:
        left = BUDGET_S - (time.time() - start)
        if left < 20:
            lines += [f"## {step.title}", "", "skipped: the time budget is spent", ""]
            continue
        t0 = time.time()
        try:
            proc = subprocess.run(step.argv, cwd=config.ROOT, capture_output=True, text=True,
                                  timeout=min(step.timeout_s, left))
            status, output = ("ok" if proc.returncode == 0 else f"exit {proc.returncode}"), proc.stdout + proc.stderr
        except subprocess.TimeoutExpired as exc:
            status, output = "timed out", (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        failed += status != "ok"
        lines += [f"## {step.title}: {status} ({time.time() - t0:.0f} s)", "", "```", output[-6000:].strip(), "```", ""]
        print(f"{step.title}: {status} ({time.time() - t0:.0f} s)", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print(f"summary: {out} ({time.time() - start:.0f} s in all)")
    return 1 if failed else 0


if __name__ == "__main__":
    if "--stability" in sys.argv:
        results = stability()
        points = [p for p, _ in results]
        ratios = [r for _, r in results if r is not None]
        print("points:", points)
        print(f"ratio min {min(ratios):.3f} median {sorted(ratios)[len(ratios) // 2]:.3f} max {max(ratios):.3f}; "
              f"points spread {max(points) - min(points):.2f}")
    else:
        out = Path(sys.argv[sys.argv.index("--out") + 1]) if "--out" in sys.argv else None
        sys.exit(run(out))
