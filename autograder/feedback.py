"""What a learner's feedback shows: each graded cell's outcome and message, never hidden tests.

nbgrader's feedback renders the autograded notebook, whose test cells hold the hidden tests
that autograde restored from the gradebook. `HideHiddenTests` runs in `generate_feedback`
and cuts every hidden-test region out of the test cells' source (the outputs, with each
check's message, stay), so a learner who reads the feedback learns what failed and why,
not the cases of the next attempt.
"""
from nbgrader import utils
from nbgrader.preprocessors import NbGraderPreprocessor

BEGIN, END = "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"
PLACEHOLDER = "# (hidden tests ran here; their outcome is in this cell's output)"


def visible_part(source: str) -> str:
    """The source without its hidden-test regions (an unterminated region hides the rest)."""
    kept, hidden, placed = [], False, False
    for line in source.split("\n"):
        if BEGIN in line:
            hidden = True
            if not placed:
                kept.append(line[: len(line) - len(line.lstrip())] + PLACEHOLDER)
                placed = True
        elif END in line:
            hidden = False
        elif not hidden:
            kept.append(line)
    return "\n".join(kept)


class HideHiddenTests(NbGraderPreprocessor):
    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type == "code" and utils.is_grade(cell) and not utils.is_solution(cell):
            cell.source = visible_part(cell.source)
        return cell, resources
