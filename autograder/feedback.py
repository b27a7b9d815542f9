"""What a learner's feedback shows: each graded cell's outcome and message, never hidden tests.

nbgrader's feedback renders the autograded notebook, whose test cells hold the hidden tests
that autograde restored from the gradebook. `HideHiddenTests` runs in `generate_feedback`
and cuts every hidden-test region out of the test cells' source, and out of the tracebacks
(IPython prints the lines around a failing line, which may be hidden ones); each check's
message stays, so a learner who reads the feedback learns what failed and why, not the cases
of the next attempt.
"""
import re

from nbgrader import utils
from nbgrader.preprocessors import NbGraderPreprocessor

BEGIN, END = "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"
PLACEHOLDER = "# (hidden tests ran here; their outcome is in this cell's output)"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
CONTEXT_LINE = re.compile(r"^\s*(?:-*>\s*)?\d+\s(.*)$")  # IPython's "----> 12 code" / "     13 code"


def hidden_lines(source: str) -> set[str]:
    """The stripped lines of a source's hidden-test regions, the markers included."""
    found, hidden = set(), False
    for line in source.split("\n"):
        hidden = hidden or BEGIN in line
        if hidden and line.strip():
            found.add(line.strip())
        hidden = hidden and END not in line
    return found


def scrub_traceback(frames: list[str], secret: set[str]) -> list[str]:
    """A traceback without the context lines IPython printed from the hidden regions."""
    def shown(line: str) -> bool:
        match = CONTEXT_LINE.match(ANSI.sub("", line))
        return not (match and match.group(1).strip() in secret)
    return ["\n".join(line for line in frame.split("\n") if shown(line)) for frame in frames]


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
            secret = hidden_lines(cell.source)
            for output in cell.get("outputs", []):
                if output.get("output_type") == "error":
                    output.traceback = scrub_traceback(output.traceback, secret)
            cell.source = visible_part(cell.source)
        return cell, resources
