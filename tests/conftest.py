import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import autograder  # noqa: E402,F401  (CPU interpreters before any test imports triton)


@pytest.fixture(scope="session")
def graded_course(tmp_path_factory):
    """Release every lab into a scratch folder and autograde all sample submissions there.

    The expensive part of the suite (a few minutes on 2 cores), shared by the grading tests.
    """
    from autograder import config, grading, samples

    scratch = tmp_path_factory.mktemp("course")
    os.environ["COURSE_GRADING_DIR"] = str(scratch / "grading")
    os.environ["COURSE_CELL_TIMEOUT"] = "40"
    release_folder = str(scratch / "release")
    labs = grading.all_labs()
    grading.release(labs, release_folder=release_folder)
    pairs = []
    for lab in labs:
        for student in samples.students_for(lab):
            grading.submit(student, lab, samples.make_sample(lab, student, release_folder=release_folder))
            pairs.append((student, lab))
    outcomes = grading.autograde(pairs)
    grading.feedback(labs)
    csv = grading.export(config.grading_dir() / "grades.csv")
    yield dict(labs=labs, release=Path(release_folder), grading=config.grading_dir(),
               outcomes=outcomes, csv=csv)
    os.environ.pop("COURSE_GRADING_DIR", None)
