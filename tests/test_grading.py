"""The whole grading pipeline, run for real with nbgrader on the bundled samples.

reference gets full correctness marks, untouched gets zero without crashing, buggy gets
partial marks with a message that explains the mistake, hangs is cut by the timeout and
the batch goes on. Speed points are GPU-only.
"""
import csv
import filecmp
import html
import json
import re

import nbformat
import pytest

from genfast import runtime
from autograder import gradebook

pytestmark = pytest.mark.usefixtures("graded_course")


@pytest.fixture(scope="module")
def scores(graded_course):
    return gradebook.scores()


def test_released_labs_match_what_nbgrader_generates(graded_course):
    from autograder.config import ROOT
    for lab in graded_course["labs"]:
        fresh = nbformat.read(graded_course["release"] / lab / f"{lab}.ipynb", as_version=4)
        committed = nbformat.read(ROOT / "labs" / lab / f"{lab}.ipynb", as_version=4)
        assert fresh == committed, f"labs/{lab} is stale: run `make release` and commit labs/"
        # JupyterLab's checkpoints (git-ignored) appear wherever someone opened a lab: not the release's
        extra = filecmp.dircmp(graded_course["release"] / lab, ROOT / "labs" / lab,
                               ignore=filecmp.DEFAULT_IGNORES + [".ipynb_checkpoints"])
        assert not extra.left_only and not extra.right_only, f"labs/{lab}: files differ {extra.left_only} {extra.right_only}"


def test_every_submission_was_graded(graded_course):
    failed = [o for o in graded_course["outcomes"] if not o.ok]
    assert not failed, failed


def test_reference_gets_full_correctness_marks(graded_course, scores):
    for lab in graded_course["labs"]:
        s = scores[("reference", lab)]
        assert s.correctness == s.correctness_max > 0, (lab, s)


def test_untouched_lab_gets_zero(graded_course, scores):
    for lab in graded_course["labs"]:
        s = scores[("untouched", lab)]
        assert s.graded and s.total == 0, (lab, s)


def test_buggy_gets_partial_marks_and_an_explanation(graded_course, scores):
    for lab in graded_course["labs"]:
        s = scores[("buggy", lab)]
        assert 0 < s.correctness < s.correctness_max, (lab, s)
        html = (graded_course["grading"] / "feedback" / "buggy" / lab / f"{lab}.html").read_text()
        assert "CheckFailed" in html and "first bad index" in html or "got" in html


def test_hanging_part_is_cut_and_the_rest_graded(graded_course, scores):
    for lab in graded_course["labs"]:
        s = scores[("hangs", lab)]
        assert 0 < s.correctness < s.correctness_max, (lab, s)
        html = (graded_course["grading"] / "feedback" / "hangs" / lab / f"{lab}.html").read_text()
        assert "CellTimeoutError" in html


def test_sample_grades_are_the_readmes(graded_course, scores):
    """The README's "Sample grades on the CPU" table is what the samples get, cell for cell: a
    change to a lab, a sample or a limit that moves a grade must update the table on purpose."""
    if runtime.on_gpu():
        pytest.skip("GPU present: the table is the CPU's")
    from autograder.config import ROOT
    readme = (ROOT / "README.md").read_text()
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| (lab\d\d_\w+) \|((?: [\d.]+ / [\d.]+ \|){4})$", readme, re.M)}
    assert set(rows) == set(graded_course["labs"]), "one README row per lab"
    for lab, cells in rows.items():
        table = re.findall(r"([\d.]+) / ([\d.]+)", cells)
        for student, (got, out_of) in zip(("reference", "untouched", "buggy", "hangs"), table):
            s = scores[(student, lab)]
            assert (float(got), float(out_of)) == (s.correctness, s.correctness_max), \
                f"{lab}/{student}: README says {got} / {out_of}, graded {s.correctness:g} / {s.correctness_max:g}"


def test_speed_points_only_on_a_gpu(graded_course, scores):
    if runtime.on_gpu():
        pytest.skip("GPU present: speed is graded")
    for key, s in scores.items():
        assert s.speed == 0, key
    assert "speed: GPU only" in gradebook.table(scores)


def test_csv_export_has_every_submission(graded_course):
    rows = list(csv.DictReader(open(graded_course["csv"])))
    got = {(r["student_id"], r["assignment"]) for r in rows}
    assert got == {(o.student, o.lab) for o in graded_course["outcomes"]}
    reference = [r for r in rows if r["student_id"] == "reference"]
    assert all(float(r["score"]) > 0 for r in reference)


def _hidden_test_lines(lab):
    """Every line inside a hidden-test block of the lab's source notebook, except lines that the
    released lab shows anyway."""
    from autograder.config import ROOT
    source = nbformat.read(ROOT / "solutions" / lab / f"{lab}.ipynb", as_version=4)
    released = (ROOT / "labs" / lab / f"{lab}.ipynb").read_text()
    lines = set()
    for cell in source.cells:
        inside = False
        for line in cell.source.splitlines():
            if "BEGIN HIDDEN TESTS" in line:
                inside = True
            elif "END HIDDEN TESTS" in line:
                inside = False
            elif inside and line.strip() and json.dumps(line.strip())[1:-1] not in released:
                lines.add(line.strip())
    return lines


def test_feedback_never_shows_hidden_tests(graded_course):
    for lab in graded_course["labs"]:
        hidden = _hidden_test_lines(lab)
        assert hidden, f"{lab} has no hidden tests"
        for page in (graded_course["grading"] / "feedback").glob(f"*/{lab}/{lab}.html"):
            text = html.unescape(re.sub(r"<[^>]+>", "", page.read_text()))
            shown = [line for line in hidden if line in text]
            assert not shown, f"{page}: the feedback shows hidden-test lines {shown[:3]}"
