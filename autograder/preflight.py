"""Look at a submission before nbgrader does, so bad input gets a grade and a reason.

A file that is missing, empty, too large, not JSON or not a notebook is graded as the
unfilled lab (zero for every part) with a note at the top explaining why; the batch goes
on. A notebook submitted under another file name is graded under the right one, with a
note saying so. Every learner-editable cell is held to the code policy (`genfast.policy`):
a cell that breaks it costs its own part, with the line and the reason in the feedback.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from genfast import policy

MAX_BYTES = 20 * 2**20

@dataclass
class Verdict:
    notebook: nbformat.NotebookNode | None = None
    problem: str = ""                      # set: graded as the unfilled lab
    notes: list[str] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        return not self.problem


def find(folder: Path, lab: str) -> tuple[Path | None, list[str]]:
    """The notebook to grade in a student's lab folder, and a note if it had another name."""
    expected = folder / f"{lab}.ipynb"
    if expected.exists():
        return expected, []
    candidates = sorted(folder.glob("*.ipynb")) if folder.is_dir() else []
    if len(candidates) == 1:
        return candidates[0], [f"Your notebook was named {candidates[0].name}; it was graded as {expected.name}."]
    return None, []


def read(path: Path | None) -> Verdict:
    if path is None or not path.exists():
        return Verdict(problem="no notebook was submitted for this lab")
    size = path.stat().st_size
    if size == 0:
        return Verdict(problem=f"{path.name} is empty")
    if size > MAX_BYTES:
        return Verdict(problem=f"{path.name} is {size / 2**20:.0f} MB, over the {MAX_BYTES // 2**20} MB limit "
                               f"(clear the outputs before submitting)")
    text = path.read_bytes().decode("utf-8", errors="replace")
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        return Verdict(problem=f"{path.name} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
                               f"was it saved while edited by hand or cut short?")
    try:
        nb = nbformat.reads(text, as_version=4)  # older notebook versions are converted
        nbformat.validate(nb)
    except Exception as exc:  # nbformat raises several kinds for malformed notebooks
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return Verdict(problem=f"{path.name} is not a valid Jupyter notebook: {first_line}")
    return Verdict(notebook=nb)


def enforce_policy(nb, lab: str, released) -> list[str]:
    """Apply the code policy (genfast.policy) to every learner-editable cell, in place.

    A solution cell that breaks it is replaced by stubs of the names it defines, which raise
    PolicyViolation with the line and the reason, so that part scores 0 and says why; any other
    cell the learner changed and that breaks it goes back to the released version. Returns
    one line per cell for the note at the top of the feedback.
    """
    released_cells = {c.get("id"): c for c in released.cells}
    lab_imports = set().union(*(policy.imported_names(c.source) for c in released.cells if c.cell_type == "code"))
    lines = []
    for index, label, findings in policy.check_notebook(nb, lab, released):
        cell = nb.cells[index]
        if cell.metadata.get("nbgrader", {}).get("solution"):
            cell.source = policy.stub_cell(cell.source, findings, keep=lab_imports)
            effect = "this part was not graded"
        else:
            original = released_cells.get(cell.get("id"))
            cell.source = original.source if original is not None and original.cell_type == "code" else ""
            effect = "the cell was put back as released"
        lines.append(f"{label}: {'; '.join(str(f) for f in findings[:3])} ({effect})")
    return lines


def note_cell(text: str):
    cell = nbformat.v4.new_markdown_cell(f"**Note from the grader.** {text}")
    cell.id = "grader-note"
    return cell


def rejected(released, reason: str):
    """The unfilled lab with `reason` on top: what a submission that cannot be graded becomes."""
    nb = copy.deepcopy(released)
    nb.cells.insert(0, note_cell(f"{reason}. It was graded as the unfilled lab, so every part scores 0. "
                                 f"Fix it and resubmit, or ask your instructor."))
    return nb


def check(folder: Path, lab: str, released) -> Verdict:
    """Everything above, in order; `released` is the lab as handed out (graded on rejection)."""
    path, notes = find(folder, lab)
    verdict = read(path)
    verdict.notes = notes + verdict.notes
    if verdict.accepted:
        broken = enforce_policy(verdict.notebook, lab, released)
        if broken:
            verdict.notes.append("The code policy (run `python -m genfast.policy NOTEBOOK` before submitting) "
                                 "found: " + " | ".join(broken))
    if not verdict.accepted:
        verdict.notebook = rejected(released, f"Your submission could not be graded: {verdict.problem}")
    elif verdict.notes:
        verdict.notebook.cells.insert(0, note_cell(" ".join(verdict.notes)))
    return verdict
