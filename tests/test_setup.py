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
    yml = [line for line in yml_lines if not line.startswith("-e")]
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
