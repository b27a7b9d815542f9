"""Sample submissions that `make grade` autogrades, made fresh from each lab's notebooks.

- reference: the released notebook with the instructor's solutions filled in (full marks)
- untouched: the released notebook as a learner first gets it (zero, and no crash)
- buggy:     the solutions with a plausible mistake (partial marks, a useful message)
- hangs:     the solutions with an endless loop in one part (that part times out, scores 0)

The mistakes live in autograder/samples/<lab>.toml as text replacements inside named
solution cells, so they follow the solutions when those change; a replacement that no
longer applies is an error, not a silently correct "buggy" sample.
"""
from __future__ import annotations

import copy
import tomllib
from pathlib import Path

import nbformat

from .config import ROOT, SOURCE_DIR, release_dir

STUDENTS = ("reference", "untouched", "buggy", "hangs")
SAMPLES_DIR = Path(__file__).parent / "samples"


def notebook_path(folder, lab: str) -> Path:
    return ROOT / folder / lab / f"{lab}.ipynb"  # an absolute folder replaces ROOT


def solution_code(source: str) -> str:
    """The solution as a learner would type it: the markers dropped, the code kept."""
    lines = source.splitlines()
    return "\n".join(line for line in lines if line.strip() not in ("### BEGIN SOLUTION", "### END SOLUTION"))


def _grade_id(cell) -> str | None:
    return cell.metadata.get("nbgrader", {}).get("grade_id")


def filled_in(release_nb, source_nb):
    """The released notebook with every solution cell replaced by the instructor's solution."""
    solutions = {_grade_id(c): c.source for c in source_nb.cells if c.metadata.get("nbgrader", {}).get("solution")}
    nb = copy.deepcopy(release_nb)
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("solution"):
            cell.source = solution_code(solutions[_grade_id(cell)])
    return nb


def mistakes(lab: str) -> dict:
    path = SAMPLES_DIR / f"{lab}.toml"
    return tomllib.loads(path.read_text()) if path.exists() else {}


def _apply(nb, replacements: list[dict], lab: str, student: str):
    for rep in replacements:
        cells = [c for c in nb.cells if _grade_id(c) == rep["cell"]]
        if not cells or rep["old"] not in cells[0].source:
            raise ValueError(f"samples/{lab}.toml [{student}]: cell {rep['cell']!r} has no text {rep['old']!r}; "
                             f"update the sample to match the solution")
        cells[0].source = cells[0].source.replace(rep["old"], rep["new"], 1)
    return nb


def make_sample(lab: str, student: str):
    release_nb = nbformat.read(notebook_path(release_dir(), lab), as_version=4)
    if student == "untouched":
        return release_nb
    nb = filled_in(release_nb, nbformat.read(notebook_path(SOURCE_DIR, lab), as_version=4))
    if student == "reference":
        return nb
    spec = mistakes(lab).get(student)
    if spec is None:
        raise KeyError(f"no [{student}] sample defined in autograder/samples/{lab}.toml")
    return _apply(nb, spec["replace"], lab, student)


def cell_limit(lab: str, student: str) -> dict | None:
    """The sample's own short per-cell limit, if its section sets one:

        cell_timeout_s = 3            # seconds, instead of the course's 60 (config.CELL_TIMEOUT_S)
        hangs_in = ["rank_one_edit"]  # the names whose cells get it: the function that never returns

    A `hangs` sample only shows that the limit cuts an endless cell while the rest is graded, so
    the cells that call its endless function may wait seconds instead of a minute each; every
    other cell of the sample, and every real submission, keeps the course's limit."""
    spec = mistakes(lab).get(student, {})
    if "cell_timeout_s" not in spec:
        return None
    if not spec.get("hangs_in"):
        raise ValueError(f"samples/{lab}.toml [{student}]: cell_timeout_s needs hangs_in, the names it applies to")
    return {"seconds": int(spec["cell_timeout_s"]), "names": list(spec["hangs_in"])}


def students_for(lab: str) -> list[str]:
    defined = mistakes(lab)
    return [s for s in STUDENTS if s in ("reference", "untouched") or s in defined]
