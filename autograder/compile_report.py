"""What every Triton kernel of the course compiles to on real GPUs, measured on a CPU.

Triton compiles ahead of time without a GPU: `triton.compile(ASTSource(fn, signature,
constexprs), target=GPUTarget("cuda", 90, 32))` builds PTX and a cubin here, and the
`cuobjdump` that ships inside the triton wheel reads its registers, stack (spills), shared
memory and SASS. For each kernel (each reference kernel at each launch configuration it can
use, and each lab's solution kernel at its launcher's configuration) and each target, one row:

    kernel,target,config,registers,spill_bytes,shared_bytes,mma_instructions

`mma_instructions` counts tensor-core instructions in the SASS (HMMA on sm_80, HGMMA on sm_90).
A kernel that calls `tl.dot` must have some; a reference configuration must not spill.

    python -m autograder compile-report [--csv FILE] [--only NAME] [--write-reference]

`--write-reference` also writes the reference kernels' figures into
genfast/fixtures/compile_reference.json: the speed cells show them next to a learner's own
kernel on a machine without a GPU (genfast/compile_info.py).
"""
from __future__ import annotations

import ast
import csv
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from genfast.compile_info import TARGETS, build, describe, first_line

COLUMNS = ["kernel", "target", "config", "registers", "spill_bytes", "shared_bytes", "mma_instructions"]


@dataclass
class KernelSpec:
    """One kernel to compile: how to get it, the types of its arguments, its configurations."""
    name: str
    get: Callable[[], object]                      # returns the JITFunction
    pointers: dict[str, str]                        # pointer arguments -> "*fp16", "*fp32", "*i64", ...
    configs: Callable[[], list[dict]]              # constexpr values + num_warps / num_stages
    scalars: dict[str, str] = field(default_factory=dict)  # non-i32 scalars -> "fp32", "i64"
    reference: bool = True                          # a reference configuration must not spill
    uses_dot: bool = False                          # must show tensor-core instructions
    known_spill: str = ""                           # why a reference may spill for now (shown in the report)


@dataclass
class Row:
    kernel: str
    target: str
    config: str
    registers: int
    spill_bytes: int
    shared_bytes: int
    mma_instructions: int
    error: str = ""
    settings: dict = field(default_factory=dict)  # the configuration itself

    def as_dict(self) -> dict:
        return {c: getattr(self, c) for c in COLUMNS}


def rows_for(spec: KernelSpec, targets=tuple(TARGETS)) -> list[Row]:
    rows = []
    try:
        fn = spec.get()
        while not hasattr(fn, "arg_names"):  # an autotuner or heuristics wraps the JITFunction
            fn = fn.fn
    except Exception as exc:  # the kernel's source does not even load: one row per target says so
        return [Row(spec.name, target, "-", -1, -1, -1, -1, error=first_line(exc)) for target in targets]
    for config in spec.configs():
        for target in targets:
            b = build(fn, spec.pointers, spec.scalars, config, target)
            rows.append(Row(spec.name, target, describe(config), b.registers, b.spill_bytes, b.shared_bytes,
                            b.mma_instructions, error=b.error, settings=config))
    return rows


def problems(spec: KernelSpec, rows: list[Row]) -> list[str]:
    """What makes the report unclean: no compile, a spilling reference, a tl.dot without MMA."""
    found = []
    for row in rows:
        where = f"{row.kernel} [{row.target}; {row.config}]"
        if row.error:
            found.append(f"{where}: does not compile: {row.error}")
        elif spec.reference and row.spill_bytes > 0 and not spec.known_spill:
            found.append(f"{where}: spills {row.spill_bytes} bytes ({row.registers} registers)")
        elif spec.uses_dot and row.mma_instructions == 0:
            found.append(f"{where}: calls tl.dot but has no tensor-core instruction")
    return found


# solution kernels: the instructor's solution cell, compiled as the learner's kernel would be
def solution_kernel(lab: str, cell: str, name: str):
    """The Triton kernel `name` defined in solution cell `cell` of solutions/<lab>, compiled from
    its own source together with the jit helpers the notebook's other cells define."""
    import nbformat
    from autograder import config
    nb = nbformat.read(config.ROOT / "solutions" / lab / f"{lab}.ipynb", as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code"]
    cells.sort(key=lambda c: c.metadata.get("nbgrader", {}).get("grade_id") == cell)  # its own cell last
    code = "\n\n".join(_jit_functions(c.source) for c in cells)
    folder = Path(os.environ.get("COURSE_COMPILE_DIR", "/tmp/course-compile")) / lab
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{cell}.py"  # triton.jit reads the source from a file
    path.write_text("import triton\nimport triton.language as tl\n\n\n" + textwrap.dedent(code) + "\n")
    import importlib.util
    spec = importlib.util.spec_from_file_location(f"_solution_{lab}_{cell}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


def _jit_functions(source: str) -> str:
    """The @triton.jit functions of a cell's source, decorators included."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return ""
    lines = source.splitlines()
    return "\n\n".join("\n".join(lines[node.decorator_list[0].lineno - 1:node.end_lineno]) for node in tree.body
                        if isinstance(node, ast.FunctionDef) and any(ast.unparse(d).startswith("triton.jit")
                                                                for d in node.decorator_list))


def registry() -> list[KernelSpec]:
    from autograder import compile_kernels
    return compile_kernels.SPECS


def _rows_of(index: int, targets) -> list[Row]:
    return rows_for(registry()[index], targets)


def report(only: str | None = None, targets=tuple(TARGETS), workers: int | None = None) -> tuple[list[Row], list[str]]:
    """Compile every registered kernel (those whose name contains `only`), one process per core."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    specs = [(i, spec) for i, spec in enumerate(registry()) if not only or only in spec.name]
    with ProcessPoolExecutor(workers or os.cpu_count() or 1, mp_context=multiprocessing.get_context("fork")) as pool:
        results = list(pool.map(_rows_of, [i for i, _ in specs], [targets] * len(specs)))
    rows, found = [], []
    for (_, spec), spec_rows in zip(specs, results):
        rows += spec_rows
        found += problems(spec, spec_rows)
    return rows, found


def table(rows: list[Row]) -> str:
    lines = [f"{'kernel':<44} {'target':<6} {'regs':>4} {'spill':>6} {'smem':>7} {'mma':>5}  config"]
    for r in rows:
        if r.error:
            lines.append(f"{r.kernel:<44} {r.target:<6} does not compile: {r.error}")
        else:
            lines.append(f"{r.kernel:<44} {r.target:<6} {r.registers:>4} {r.spill_bytes:>6} {r.shared_bytes:>7} "
                         f"{r.mma_instructions:>5}  {r.config}")
    return "\n".join(lines)


def reference_figures(rows: list[Row]) -> dict:
    """The reference kernels' rows as genfast ships them (genfast/fixtures/compile_reference.json),
    for the speed cells' feedback on a machine without a GPU."""
    references = {spec.name for spec in registry() if spec.reference}
    figures = {}
    for r in rows:
        if r.kernel in references and not r.error:
            figures.setdefault(r.kernel, []).append(dict(
                target=r.target, config=r.settings, registers=r.registers, spill_bytes=r.spill_bytes,
                shared_bytes=r.shared_bytes, mma_instructions=r.mma_instructions))
    return figures


def write_reference_figures(rows: list[Row], path=None) -> Path:
    from genfast import compile_info
    path = Path(path or compile_info.REFERENCE_FIGURES)
    path.write_text(json.dumps(reference_figures(rows), indent=1) + "\n")
    return path


def main(csv_path: str | None = None, only: str | None = None, write_reference: bool = False) -> int:
    if os.environ.get("TRITON_INTERPRET") != "0":
        # Triton decides at import whether @triton.jit interprets: compile in a fresh process
        env = dict(os.environ, TRITON_INTERPRET="0", NUMBA_ENABLE_CUDASIM="1")
        argv = [sys.executable, "-m", "autograder.compile_report"] + (["--csv", csv_path] if csv_path else []) \
            + (["--only", only] if only else []) + (["--write-reference"] if write_reference else [])
        return subprocess.run(argv, env=env).returncode
    rows, found = report(only)
    print(table(rows))
    if csv_path:
        with open(csv_path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(r.as_dict() for r in rows)
        print(f"\nwrote {csv_path}")
    if write_reference:
        if only:
            print("--write-reference needs the whole report (no --only)")
            return 2
        print(f"wrote {write_reference_figures(rows)}")
    known = sorted({f"{s.name}: {s.known_spill}" for s in registry() if s.known_spill and (not only or only in s.name)})
    if known:
        print("\nknown spills (not yet fixed):\n  " + "\n  ".join(known))
    print("\n" + ("clean: every kernel compiles for sm_80 and sm_90, no reference spills, every tl.dot uses tensor cores"
                  if not found else "problems:\n  " + "\n  ".join(found)))
    return 1 if found else 0


if __name__ == "__main__":
    import argparse
    parser = argparse.ArgumentParser(prog="python -m autograder compile-report")
    parser.add_argument("--csv")
    parser.add_argument("--only")
    parser.add_argument("--write-reference", action="store_true",
                        help="also write the reference kernels' figures that genfast ships")
    args = parser.parse_args()
    sys.exit(main(args.csv, args.only, args.write_reference))
