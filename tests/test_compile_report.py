"""Every Triton kernel of the course compiles for real GPUs (sm_80, sm_90), ahead of time, here.

The compile report builds each reference kernel at every launch configuration it can use and
each lab's solution kernel at its launcher's, for both targets, and reads registers, spills,
shared memory and tensor-core instructions from the cubin. A kernel that does not compile, a
reference configuration that spills, or a `tl.dot` kernel without tensor-core instructions
fails here.
"""
import csv
import importlib
import os
import subprocess
import sys

import pytest

from autograder import compile_report, config


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    path = tmp_path_factory.mktemp("compile") / "report.csv"
    env = dict(os.environ, TRITON_INTERPRET="0")
    proc = subprocess.run([sys.executable, "-m", "autograder", "compile-report", "--csv", str(path)], cwd=config.ROOT,
                          capture_output=True, text=True, env=env, timeout=1500)
    rows = list(csv.DictReader(open(path))) if path.exists() else []
    return dict(proc=proc, rows=rows)


def test_every_kernel_compiles_for_sm80_and_sm90(report):
    assert report["rows"], report["proc"].stdout[-3000:] + report["proc"].stderr[-3000:]
    broken = [r for r in report["rows"] if int(r["registers"]) < 0]
    assert not broken, "\n".join(line for line in report["proc"].stdout.splitlines() if "does not compile" in line)
    for kernel in {r["kernel"] for r in report["rows"]}:
        assert {r["target"] for r in report["rows"] if r["kernel"] == kernel} == set(compile_report.TARGETS), kernel


def test_no_reference_configuration_spills_and_every_dot_uses_tensor_cores(report):
    problems = [line.strip() for line in report["proc"].stdout.split("problems:")[-1].splitlines()
                if line.strip()] if "problems:" in report["proc"].stdout else []
    assert not problems, "\n".join(problems)
    assert report["proc"].returncode == 0 and "clean:" in report["proc"].stdout


def test_every_module_with_a_kernel_is_in_the_report():
    from autograder import compile_kernels  # noqa: F401  (the registry)
    listed = "\n".join(spec.name for spec in compile_report.registry())
    for module in ("vector_add", "softmax", "matmul", "attention", "flash_backward", "linear_attention", "selective_scan",
                   "kv_cache", "sampling", "minhash", "similarity_topk", "paged_attention", "paged_prefill"):
        assert f"{module}." in listed, f"kernels/{module}.py has no row in the compile report"
    for lab in ("lab00", "lab01", "lab02", "lab03", "lab04", "lab05", "lab06", "lab08"):
        assert f"{lab} " in listed, f"{lab}'s solution kernel has no row in the compile report"


def test_the_known_spills_are_exactly_the_listed_ones():
    """A kernel may be excused from the no-spill rule only with a written reason; the list is short."""
    from autograder import compile_kernels  # noqa: F401
    excused = [spec.name for spec in compile_report.registry() if spec.known_spill]
    assert excused == [], excused   # none today: the last one, the sampling kernel, streams its row now


def test_the_reference_figures_genfast_ships_are_the_reports(report):
    """The speed cells show these next to a learner's kernel; rebuild them with
    `python -m autograder compile-report --write-reference` when a reference kernel changes."""
    import json

    from genfast import compile_info
    shipped = json.loads(compile_info.REFERENCE_FIGURES.read_text())
    fresh = {}
    for r in report["rows"]:
        if r["kernel"] in shipped:
            fresh.setdefault(r["kernel"], set()).add((r["target"], r["config"], int(r["registers"]),
                                                      int(r["spill_bytes"]), int(r["shared_bytes"]),
                                                      int(r["mma_instructions"])))
    saved = {name: {(row["target"], compile_report.describe(row["config"]), row["registers"], row["spill_bytes"],
                     row["shared_bytes"], row["mma_instructions"]) for row in rows} for name, rows in shipped.items()}
    references = {spec.name for spec in compile_report.registry() if spec.reference}
    assert set(shipped) == references, "rebuild: python -m autograder compile-report --write-reference"
    assert saved == fresh, "rebuild: python -m autograder compile-report --write-reference"
