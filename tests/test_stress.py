"""`python -m autograder stress` prints where one submission's grading time goes: its stages come
from nbgrader's log and the marks the grading kernel writes while it starts, and add up."""
import pytest

from autograder import grading, stress

LAB = "lab01_generation"


@pytest.fixture
def scratch_course(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_GRADING_DIR", str(tmp_path / "grading"))
    monkeypatch.setenv("COURSE_RELEASE_DIR", str(tmp_path / "release"))
    grading.release([LAB])


def test_the_profile_of_one_submission_adds_up_and_names_the_imports(scratch_course, capsys):
    profile = stress.profile_one(LAB, student="untouched")
    assert profile["ok"]
    walls = {s["stage"]: s["wall"] for s in profile["stages"]}
    assert all(w >= 0 for w in walls.values()), walls
    assert sum(walls.values()) == pytest.approx(profile["wall"], abs=0.05)
    # torch and triton are imported between the kernel's first two marks, not in a cell
    assert walls[stress.IMPORTS_STAGE] > 0.2, walls
    assert walls["the feedback page (nbgrader generate_feedback)"] > 0
    assert 0 < profile["cells"] < profile["wall"]

    stress.print_profile(stress.median_profile([profile, profile]))
    printed = capsys.readouterr().out
    assert "(the median of 2 runs)" in printed and "beyond the cells" in printed
    assert "import torch and triton" in printed
