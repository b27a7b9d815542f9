import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import genfast  # noqa: E402,F401  (CPU interpreters before any test imports triton)

# the speed cells' compile report for a machine without a GPU costs seconds per kernel: the
# notebooks the suite runs skip it, except where a test turns it on to check it
os.environ.setdefault("COURSE_COMPILE_FEEDBACK", "0")


@pytest.fixture(scope="session")
def graded_course(tmp_path_factory):
    """Release every lab into a scratch folder and autograde all sample submissions there.

    The expensive part of the suite (a few minutes on 2 cores), shared by the grading tests.
    """
    from autograder import config, grading

    scratch = tmp_path_factory.mktemp("course")
    os.environ["COURSE_GRADING_DIR"] = str(scratch / "grading")
    os.environ["COURSE_CELL_TIMEOUT"] = "60"
    os.environ["COURSE_RELEASE_DIR"] = str(scratch / "release")
    labs = grading.all_labs()
    grading.release(labs)
    pairs = grading.submit_samples(labs)
    outcomes = grading.autograde(pairs, workers=2)
    grading.feedback(labs)
    csv = grading.export(config.grading_dir() / "grades.csv")
    yield dict(labs=labs, release=config.release_dir(), grading=config.grading_dir(),
               outcomes=outcomes, csv=csv)
    for var in ("COURSE_GRADING_DIR", "COURSE_CELL_TIMEOUT", "COURSE_RELEASE_DIR"):
        os.environ.pop(var, None)
