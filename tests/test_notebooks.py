"""Notebooks are sources: valid, outputs stripped, and the release matches its source."""
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted(p for folder in ("solutions", "labs", "course") for p in (ROOT / folder).rglob("*.ipynb")
                   if ".ipynb_checkpoints" not in p.parts)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_notebook_is_valid_and_stripped(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{path.name}: strip outputs before committing"


def test_every_lab_is_released():
    from autograder import grading
    for lab in grading.all_labs():
        assert (ROOT / "labs" / lab / f"{lab}.ipynb").exists(), f"run `make release` for {lab}"


def test_released_labs_hide_solutions_and_hidden_tests():
    for path in (ROOT / "labs").rglob("*.ipynb"):
        text = path.read_text()
        for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS"):
            assert marker not in text, f"{path.name} leaks '{marker}'"
        assert "raise NotImplementedError()" in text
