"""Look at a submission before nbgrader does, so bad input gets a grade and a reason.

A file that is missing, empty, too large, not JSON or not a notebook, and a notebook
that tampers with the grading harness, are graded as the unfilled lab (zero for every
part) with a note at the top explaining why; the batch goes on. A notebook submitted
under another file name is graded under the right one, with a note saying so.
"""
from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

MAX_BYTES = 20 * 2**20

# Code that rebinds the checks, the benchmark, the grader's builtins or torch's comparison
# functions: a submission must earn its points, not redefine how they are counted.
TAMPERING = [
    (r"\b(checks|bench|runtime|autograder)\s*\.\s*[A-Za-z_]\w*\s*=[^=]", "reassigns part of the grading harness"),
    (r"\bsetattr\s*\(\s*(checks|bench|runtime|autograder|torch|builtins)\b", "patches the grading harness with setattr"),
    (r"\btorch\s*\.\s*(allclose|equal|testing\s*\.\s*\w+)\s*=[^=]", "redefines a torch comparison function"),
    (r"\b__builtins__\b|\bimport\s+builtins\b|\bfrom\s+builtins\s+import\b", "modifies Python's builtins"),
    (r"\bsys\s*\.\s*modules\s*\[", "replaces an imported module in sys.modules"),
    (r"\b(importlib\s*\.\s*reload|reload)\s*=[^=]", "replaces the module loader"),
]


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


def tampering(nb) -> list[str]:
    """Lines of learner-editable code cells that rebind the grading harness."""
    found = []
    for cell in nb.cells:
        if cell.cell_type != "code" or cell.metadata.get("nbgrader", {}).get("locked"):
            continue
        for line in cell.source.splitlines():
            code = line.split("#", 1)[0]
            for pattern, why in TAMPERING:
                if re.search(pattern, code):
                    found.append(f"`{line.strip()[:120]}` {why}")
    return found


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
        tampered = tampering(verdict.notebook)
        if tampered:
            verdict.problem = "the notebook changes how it is graded: " + "; ".join(tampered[:3])
    if not verdict.accepted:
        verdict.notebook = rejected(released, f"Your submission could not be graded: {verdict.problem}")
    elif verdict.notes:
        verdict.notebook.cells.insert(0, note_cell(" ".join(verdict.notes)))
    return verdict
