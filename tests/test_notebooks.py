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


# visible checks that a hidden block re-runs through its parts (other helpers), so grading runs them
KEPT_VISIBLE = {("lab02_attention", "test_cost_model"), ("lab05_dataset_cards", "test_lsh")}


def test_every_visible_check_is_rerun_by_its_hidden_block():
    """The course's rule, on which grading relies (autograder/visible_checks.py skips the visible
    run in graded notebooks): each test cell's visible `lab.check_*` statements are run again by
    the cell's hidden block through GRADER.lab, which assigns again whatever they assign; the
    few whose hidden block checks the parts instead stay in the graded run."""
    import ast

    from autograder import visible_checks
    kept, skipped = set(), 0
    for path in sorted((ROOT / "solutions").rglob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            nbgrader = cell.metadata.get("nbgrader", {})
            parts = visible_checks.split(cell.source)
            if not nbgrader.get("grade") or nbgrader.get("solution") or parts is None:
                continue
            graded = visible_checks.skip_visible(cell.source)
            ast.parse(graded)  # still a valid cell
            left = [s for s in ast.parse(visible_checks.split(graded)[0]).body if visible_checks._check_name(s)]
            skipped += graded.count(visible_checks.NOTE)
            if left:
                kept.add((path.stem, nbgrader["grade_id"]))
    assert kept == KEPT_VISIBLE, f"visible checks that no hidden block re-runs: {kept - KEPT_VISIBLE}"
    assert skipped >= 50, skipped


def test_a_visible_check_the_hidden_block_does_not_rerun_is_kept():
    from autograder import visible_checks
    source = ("lab.check_a(f)\nx = lab.check_b(f)\nprint('kept')\n### BEGIN HIDDEN TESTS\n"
              "GRADER.lab.check_a(f, sizes=[1, 2])\nGRADER.lab.check_b(f)\n### END HIDDEN TESTS")
    lines = visible_checks.skip_visible(source).split("\n")
    assert lines[0].startswith("# lab.check_a(f)")          # re-run below: skipped, with why
    assert lines[1] == "x = lab.check_b(f)"                 # assigns x, which the hidden block does not
    assert lines[2] == "print('kept')" and lines[3:] == source.split("\n")[3:]


def test_the_autograde_steps_are_nbgraders_own_after_the_skip():
    """autograder/config.py spells out nbgrader's autograde preprocessors to put SkipVisibleChecks
    first; an nbgrader whose own list changed must not be silently overridden."""
    from nbgrader.converters.autograde import Autograde
    from traitlets.config import Config

    from autograder import config
    c = Config()
    config.apply(c)
    ours = list(c.Autograde.autograde_preprocessors)
    nbgraders = Autograde.class_traits()["autograde_preprocessors"].make_dynamic_default()
    assert ours[:2] == ["autograder.visible_checks.SkipVisibleChecks", "autograder.demo_cells.SkipDemoCells"]
    assert ours[2:] == [f"{p.__module__.rsplit('.', 1)[0]}.{p.__name__}" for p in nbgraders]


# -- demo cells: skipped in graded runs (autograder/demo_cells.py) ------------------------------

def _demo_cells(nb) -> dict:
    from autograder import demo_cells
    return {c.id: c.source for c in nb.cells if demo_cells.TAG in c.metadata.get("tags", [])}


@pytest.mark.parametrize("path", sorted((ROOT / "solutions").rglob("*.ipynb")), ids=lambda p: p.parent.name)
def test_every_demo_tag_is_a_plain_cell_that_nothing_later_needs(path):
    from nbgrader import utils
    from autograder import demo_cells
    nb = nbformat.read(path, as_version=4)
    demos = _demo_cells(nb)
    assert demos, "every lab tags its heavy teaching-only cells `demo`"
    tagged = [c for c in nb.cells if c.id in demos]
    assert all(c.cell_type == "code" and not utils.is_grade(c) and not utils.is_solution(c) for c in tagged)
    skipped = {nb.cells[i].id for i in demo_cells.skippable(nb.cells, demos)}
    assert skipped == set(demos), f"tagged `demo` but a later cell reads what they bind: {sorted(set(demos) - skipped)}"


def _graded_copy(lab: str, edit=None):
    """The released notebook of `lab`, as a submission, through SkipDemoCells."""
    from autograder import demo_cells
    nb = nbformat.read(ROOT / "labs" / lab / f"{lab}.ipynb", as_version=4)
    if edit:
        edit(nb)
    resources = {"nbgrader": {"assignment": lab, "notebook": lab}}
    demo_cells.SkipDemoCells().preprocess(nb, resources)
    return {c.id: c.source for c in nb.cells}


def _cell(nb, cell_id):
    return next(c for c in nb.cells if c.id == cell_id)


def test_a_demo_is_skipped_only_as_released_and_when_nothing_later_reads_it():
    from autograder import demo_cells
    lab, demo = "lab00_triton_warmup", "cell-020"   # the roofline plot: binds P, W, intensity, points
    assert _graded_copy(lab)[demo].startswith(demo_cells.NOTE)

    def edit_the_demo(nb):
        _cell(nb, demo).source += "\nprint('mine')"
    assert not _graded_copy(lab, edit_the_demo)[demo].startswith("#")

    def read_its_variable_later(nb):   # a learner's own cell after it reuses the demo's `points`
        nb.cells.append(nbformat.v4.new_code_cell("print(points)"))
    assert not _graded_copy(lab, read_its_variable_later)[demo].startswith("#")

    def unreadable_cell_later(nb):
        nb.cells.append(nbformat.v4.new_code_cell("print(("))
    assert not _graded_copy(lab, unreadable_cell_later)[demo].startswith("#")


def test_a_tag_in_the_submission_makes_the_grader_skip_nothing():
    from autograder import demo_cells
    lab = "lab00_triton_warmup"
    plain = [c.id for c in nbformat.read(ROOT / "labs" / lab / f"{lab}.ipynb", as_version=4).cells
             if c.cell_type == "code" and demo_cells.TAG not in c.metadata.get("tags", [])]

    def tag_everything(nb):
        for c in nb.cells:
            c.metadata.setdefault("tags", []).append(demo_cells.TAG)
    graded = _graded_copy(lab, tag_everything)
    assert not [i for i in plain if graded[i].startswith(demo_cells.NOTE)]


def test_names_read_before_they_are_bound_count_as_needed():
    import ast
    from autograder.demo_cells import bound_names, free_names
    assert free_names(ast.parse("x = x + 1")) == {"x"}
    assert free_names(ast.parse("for i in range(3):\n    print(i, n)")) == {"range", "print", "n"}
    assert free_names(ast.parse("def f(a, b=c):\n    z = a + y\n    return z\n[k * q for k in r]")) == {"c", "y", "q", "r"}
    assert {"results", "x"} <= bound_names(ast.parse("results['a'] = 1\nx.y = 2"))
