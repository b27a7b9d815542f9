"""In a graded run, a test cell's visible check is not run twice.

Every graded test cell is a visible check a learner can run, `lab.check_x(fn)`, followed by a
hidden block that re-runs all of its cases and more through the grader's private copy,
`GRADER.lab.check_x(fn, ...)` (autograder/grader.py). Only the hidden run counts: the visible
one runs learner-reachable code, so its outcome proves nothing. In a graded run it is pure
cost, a third of some labs' grading time. `SkipVisibleChecks` runs in `autograde` just before
the notebook is executed and turns each such visible statement of a test cell into a comment
that says why; everything else in the cell runs as written. The feedback then shows the
grader's run once.

It only touches a statement whose check the hidden block of the same cell runs again (the
course's rule, which `tests/test_grading.py` checks for every test cell), and whose assigned
names the hidden block assigns again, so later cells see the grader's values.
"""
from __future__ import annotations

import ast

from nbgrader import utils
from nbgrader.preprocessors import NbGraderPreprocessor

from .feedback import BEGIN, END

NOTE = "  # the visible check: in grading, the grader's run of all its cases below is what counts"


def _check_name(statement: ast.stmt) -> str | None:
    """`check_x` for a statement `lab.check_x(...)` or `names = lab.check_x(...)`, else None."""
    value = statement.value if isinstance(statement, (ast.Expr, ast.Assign)) else None
    if isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute) \
            and isinstance(value.func.value, ast.Name) and value.func.value.id == "lab" \
            and value.func.attr.startswith("check_"):
        return value.func.attr
    return None


def _assigned(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            names |= {n.id for target in node.targets for n in ast.walk(target) if isinstance(n, ast.Name)}
    return names


def split(source: str) -> tuple[str, str] | None:
    """(visible part, hidden part) of a test cell's source, or None without a hidden block."""
    if BEGIN not in source:
        return None
    visible, _, rest = source.partition(f"### {BEGIN}")
    return visible, rest.partition(f"### {END}")[0]


def rerun_checks(hidden: str) -> set[str]:
    """The check helpers a hidden block calls through GRADER.lab."""
    calls = set()
    for node in ast.walk(ast.parse(hidden)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and ast.unparse(node.func.value) == "GRADER.lab":
            calls.add(node.func.attr)
    return calls


def skip_visible(source: str) -> str:
    """The test cell's source with each visible check that its hidden block re-runs commented out."""
    parts = split(source)
    if parts is None:
        return source
    visible, hidden = parts
    try:
        visible_tree, hidden_tree = ast.parse(visible), ast.parse(hidden)
    except SyntaxError:
        return source
    rerun, reassigned = rerun_checks(hidden), _assigned(hidden_tree)
    lines = source.split("\n")
    for statement in visible_tree.body:
        name = _check_name(statement)
        if name in rerun and _assigned(statement) <= reassigned:
            for number in range(statement.lineno - 1, statement.end_lineno):
                lines[number] = "# " + lines[number]
            lines[statement.end_lineno - 1] += NOTE
    return "\n".join(lines)


class SkipVisibleChecks(NbGraderPreprocessor):
    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type == "code" and utils.is_grade(cell) and not utils.is_solution(cell):
            cell.source = skip_visible(cell.source)
        return cell, resources
