"""The learner install, built and used as a student would use it.

The wheel of `genfast` alone is installed into a fresh virtual environment (its heavy
dependencies, torch, triton, jupyter..., come from the course's own environment through a
.pth line instead of a second download: the test is about what the wheel holds). There,
outside the repository, every released lab runs: untouched, each graded check says "not
implemented yet"; with the solutions' code pasted into the released cells, every visible
check passes. Nothing of the instructor side is importable, and no solution block of
solutions/ and no graded function's name appears in the wheel.
"""
from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import nbformat
import pytest

from autograder import config, grading, learner, samples, similarity
from genfast import policy

ROOT = config.ROOT
LABS = grading.all_labs()
SIMILARITY_LIMIT = 0.5  # share of a solution block's fingerprints found in one wheel file
FEEDBACK_LAB = "lab00_triton_warmup"  # where the speed cells' compile report for a laptop is checked


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("learner")
    wheel = learner.build_wheel(tmp / "dist")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True)
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # the course environment's packages, after the venv's own (so genfast comes from the wheel)
    Path(site, "course_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    kernelspec = tmp / "jupyter" / "kernels" / "learner"
    kernelspec.mkdir(parents=True)
    (kernelspec / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "learner", "language": "python"}))
    return dict(tmp=tmp, wheel=wheel, python=python, jupyter=tmp / "jupyter")


def _run(env, code: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "COURSE_LAB", "COURSE_GRADING")}
    return subprocess.run([env["python"], "-c", code], cwd=env["tmp"], capture_output=True, text=True, env=clean)


def test_the_learner_install_has_genfast_and_nothing_of_the_instructor_side(env):
    proc = _run(env, "import genfast, genfast.checks, genfast.policy, genfast.tinylm; print(genfast.__file__)")
    assert proc.returncode == 0, proc.stderr
    assert str(env["tmp"]) in proc.stdout, "genfast must come from the installed wheel"
    proc = _run(env, "from genfast import environment; import sys; sys.exit(0 if environment.check() else 1)")
    assert proc.returncode == 0 and "a Triton kernel ran" in proc.stdout, proc.stdout + proc.stderr  # lock shipped
    for name in ("kernels", "autograder", "solutions"):
        proc = _run(env, f"import {name}")
        assert proc.returncode != 0 and "ModuleNotFoundError" in proc.stderr, f"{name} is importable by a learner"
    names = learner.wheel_files(env["wheel"])
    assert all(n.startswith(("genfast/", "genfast-")) for n in names), sorted(names)


def _solution_blocks():
    for lab in LABS:
        nb = nbformat.read(ROOT / "solutions" / lab / f"{lab}.ipynb", as_version=4)
        for cell in nb.cells:
            if cell.metadata.get("nbgrader", {}).get("solution"):
                block, inside = [], False
                for line in cell.source.splitlines():
                    if "### BEGIN SOLUTION" in line:
                        inside = True
                    elif "### END SOLUTION" in line:
                        inside = False
                    elif inside:
                        block.append(line)
                yield lab, cell.metadata.nbgrader.grade_id, block, cell.source


def test_no_solution_block_and_no_graded_name_is_in_the_wheel(env):
    files = {name: text.decode() for name, text in learner.wheel_files(env["wheel"]).items() if name.endswith(".py")}
    fingerprints = lambda lines: set(similarity.winnow(similarity.tokens(lines, keep_attributes=True)))
    prints = {name: fingerprints(text.splitlines()) for name, text in files.items()}
    defined = {node.name: name for name, text in files.items() for node in ast.parse(text).body
               if isinstance(node, (ast.FunctionDef, ast.ClassDef))}  # module level: what a learner could import
    worst = []
    for lab, cell, block, source in _solution_blocks():
        block_prints = fingerprints([line.strip() for line in block])
        if len(block_prints) >= 8:
            for name, file_prints in prints.items():
                share = len(block_prints & file_prints) / len(block_prints)
                worst.append((share, f"{lab}/{cell}", name))
                assert share <= SIMILARITY_LIMIT, \
                    f"{name} holds {share:.0%} of the solution of {lab}/{cell} (limit {SIMILARITY_LIMIT:.0%})"
        for graded in policy.top_level_names(source):
            assert graded not in defined, f"{defined.get(graded)} defines {graded}, graded in {lab}/{cell}"
    worst.sort(reverse=True)
    print("highest solution-block overlaps with a wheel file:", worst[:3])


def _execute(env, nb, lab: str, timeout: int = 300):
    """Run a notebook in the learner's kernel from a copy of the lab's folder outside the repository."""
    from nbclient import NotebookClient
    folder = env["tmp"] / "work" / lab
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(ROOT / "labs" / lab, folder)
    # the speed cells' compile report (a few seconds a kernel) is shown, and tested, in lab00 only
    settings = dict(JUPYTER_PATH=str(env["jupyter"]), COURSE_COMPILE_FEEDBACK="1" if lab == FEEDBACK_LAB else "0")
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        NotebookClient(nb, kernel_name="learner", timeout=timeout, allow_errors=True,
                       resources={"metadata": {"path": str(folder)}}).execute()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name)
            else:
                os.environ[name] = value
    return nb


def _errors(cell) -> list[str]:
    return [f"{o.ename}: {o.evalue}" for o in cell.get("outputs", []) if o.output_type == "error"]


def _graded(nb):
    return [c for c in nb.cells if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("grade")
            and not c.metadata.nbgrader.get("solution")]


@pytest.mark.parametrize("lab", LABS)
def test_untouched_lab_runs_and_every_check_says_not_implemented(env, lab):
    nb = _execute(env, grading.released_notebook(lab), lab)
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id", "")
        errors = _errors(cell)
        if cell in _graded(nb) and not grade_id.startswith("speed_"):
            assert errors and "not implemented yet" in errors[0], f"{lab}/{grade_id}: {errors or 'passed'}"
        elif not cell.metadata.get("nbgrader", {}).get("solution"):
            assert all("ModuleNotFoundError" not in e and "kernels" not in e for e in errors), (lab, grade_id, errors)


@pytest.mark.parametrize("lab", LABS)
def test_filled_in_lab_passes_every_visible_check(env, lab):
    filled = samples.filled_in(grading.released_notebook(lab),
                               nbformat.read(ROOT / "solutions" / lab / f"{lab}.ipynb", as_version=4))
    nb = _execute(env, filled, lab)
    failed = {c.metadata.get("nbgrader", {}).get("grade_id") or f"cell {i}": _errors(c)
              for i, c in enumerate(nb.cells) if c.cell_type == "code" and _errors(c)}
    assert not failed, f"{lab}: {failed}"
    if lab == FEEDBACK_LAB:  # no GPU: each speed cell shows the learner's kernel compiled for real GPUs
        for cell in nb.cells:
            if cell.metadata.get("nbgrader", {}).get("grade_id", "").startswith("speed_"):
                text = "".join(o.get("text", "") for o in cell.get("outputs", []))
                for gpu in ("A100 (sm_80)", "H100 (sm_90)"):
                    assert re.search(gpu.replace("(", r"\(").replace(")", r"\)") + r" +yours: +\d+ registers, no spills",
                                     text), text
                assert re.search(r"reference: +\d+ registers", text), text
                assert "does not compile" not in text and "no figures shipped" not in text, text
