"""The set-up promises: one dependency list in two files, the right packages imported,
and CI running exactly the README's test command."""
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ]", requirement.strip(), maxsplit=1)[0].lower()


def test_environment_yml_and_pyproject_agree():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    yml_lines = [line.strip()[2:].strip() for line in (ROOT / "environment.yml").read_text().splitlines()
                 if line.strip().startswith("- ") and line.startswith("      ")]
    yml = [line for line in yml_lines if not line.startswith(("-e", "-c"))]
    assert sorted(yml) == sorted(pyproject), "environment.yml's pip list must equal pyproject's dependencies"
    for required in ("torch", "triton", "jupyterlab", "nbgrader", "matplotlib", "ipywidgets",
                     "datasets", "numba", "numba-cuda", "pytest"):
        assert required in {_name(r) for r in pyproject}, f"{required} missing from pyproject.toml"


def test_course_packages_come_from_this_repository():
    # PyPI has an unrelated package called `kernels`; make sure ours is the one imported.
    import autograder
    import kernels
    for module in (autograder, kernels):
        assert Path(module.__file__).resolve().parent.parent == ROOT, module.__file__


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and "make grade" in readme
    assert re.search(r"^make test$", ci, re.M), ".ci/run must call exactly `make test`"


def test_every_lab_has_its_samples_and_readme_row():
    from autograder import grading, samples
    readme = (ROOT / "README.md").read_text()
    for lab in grading.all_labs():
        assert lab in readme, f"{lab} missing from README's lab table"
        assert set(samples.students_for(lab)) == set(samples.STUDENTS), f"{lab}: define buggy and hangs samples"


def test_a_samples_short_cell_limit_names_the_endless_function():
    """A `hangs` sample may cut the cells that call its endless function after a few seconds
    (samples.cell_limit); each name it gives must be a function the solutions define and the
    sample's edit makes endless, or called by one, so the short limit stays on those cells."""
    import nbformat
    from autograder import grading, samples
    for lab in grading.all_labs():
        limit = samples.cell_limit(lab, "hangs")
        if limit is None:
            continue
        assert 1 <= limit["seconds"] < 60
        nb = nbformat.read(ROOT / "solutions" / lab / f"{lab}.ipynb", as_version=4)
        defined = {name for cell in nb.cells for name in re.findall(r"^def (\w+)", cell.source, re.M)}
        assert set(limit["names"]) <= defined, (lab, set(limit["names"]) - defined)
        edited = {rep["cell"] for rep in samples.mistakes(lab)["hangs"]["replace"]}
        edited_defs = {name for cell in nb.cells if cell.metadata.get("nbgrader", {}).get("grade_id") in edited
                       for name in re.findall(r"^def (\w+)", cell.source, re.M)}
        assert edited_defs & set(limit["names"]), f"{lab}: hangs_in names none of the edited cell's functions"


def test_the_lock_pins_what_is_installed_and_make_setup_uses_it():
    """The lock is the environment the tests pass in: every package it names is installed at its
    version here (CI installs with it), and both set-up routes use it."""
    from genfast import environment
    locked = environment.locked_versions()
    for name in ("torch", "triton", "numba", "nbgrader", "jupyterlab"):
        assert name in locked, f"{name} is not in genfast/environment.lock"
    assert environment.problems() == [], environment.problems()
    assert "-c $(VENV)/constraints.txt" in (ROOT / "Makefile").read_text()
    assert "-c genfast/environment.lock" in (ROOT / "environment.yml").read_text()


def test_the_environment_check_names_what_differs(capsys, monkeypatch):
    from genfast import environment
    assert environment.check() is True
    out = capsys.readouterr().out
    assert "environment:" in out and "a Triton kernel ran" in out and "WARNING" not in out
    monkeypatch.setattr(environment, "installed_version", lambda name: "1.0" if name == "triton" else "9.9")
    monkeypatch.setattr(environment, "locked_versions", lambda path=None: {"triton": "3.9.0", "torch": "9.9"})
    assert environment.problems() == ["triton 1.0 is installed; the course was tested with 3.9.0"]
    assert environment.check() is False
    assert "WARNING: triton 1.0 is installed" in capsys.readouterr().out


def test_the_fast_tier_names_test_files_that_exist():
    makefile = (ROOT / "Makefile").read_text()
    block = makefile.split("FAST_TESTS :=", 1)[1].split("\ntest-fast:", 1)[0]
    names = re.findall(r"test_\w+", block)
    assert len(names) >= 10
    for name in names:
        assert (ROOT / "tests" / f"{name}.py").exists(), f"make test-fast names tests/{name}.py, which is gone"
