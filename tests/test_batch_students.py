"""A grading batch and nbgrader's gradebook: the students are in it before the workers start."""
import os
import sys


def test_a_batch_puts_its_students_in_the_gradebook_before_any_worker_starts(tmp_path, monkeypatch):
    """Two workers grading two labs of one new student would both insert the student into the
    gradebook, and the second would fail on its unique key (CI saw lab01's `hangs` sample graded
    as the unfilled lab that way): the batch adds every student first."""
    from nbgrader.api import Gradebook
    from autograder import config, gradebook, grading
    monkeypatch.setenv("COURSE_GRADING_DIR", str(tmp_path / "grading"))
    config.grading_dir().mkdir(parents=True)
    # a gradebook, as releasing a lab makes it (nbgrader runs `alembic` from the venv to create it)
    monkeypatch.setenv("PATH", os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]]))
    Gradebook(f"sqlite:///{gradebook.db_path()}", config.COURSE_ID).close()
    seen = []

    def fake_autograde_one(student, lab, threads=None):
        with Gradebook(f"sqlite:///{gradebook.db_path()}", config.COURSE_ID) as gb:
            seen.append(sorted(s.id for s in gb.students))
        return grading.Outcome(student, lab, True, 0.0)
    monkeypatch.setattr(grading, "autograde_one", fake_autograde_one)
    pairs = [("alice", "lab00_triton_warmup"), ("alice", "lab01_generation"), ("bob", "lab00_triton_warmup")]
    outcomes = grading.autograde(pairs, workers=2)
    assert len(outcomes) == 3 and seen == [["alice", "bob"]] * 3
