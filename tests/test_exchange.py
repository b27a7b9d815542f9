"""The nbgrader exchange between real Unix users: an instructor and two students, made here.

The whole flow with nbgrader's own commands, each run as the user who would run it on a shared
server: the instructor releases, the students fetch, edit and submit (one of them twice, the
second time after the due date), the instructor collects, the course grades in its sandbox and
writes feedback, the instructor releases it and the students fetch it. Then what the exchange
promises: a student cannot read another's submission, the late resubmission replaced the first
one and was graded once, and the feedback a student fetches keeps the hidden tests hidden.

The users, and how they reach Python without the course folder: tests/classroom.py.
"""
import html
import json
import pwd
import re
import time
from datetime import datetime, timezone
from pathlib import Path

import nbformat
import pytest

from autograder import config
from classroom import Users, classroom as make_classroom
from helpers import course_env

pytestmark = pytest.mark.classroom

ROOT = config.ROOT
LAB = "lab00_triton_warmup"  # the cheapest lab to grade


def _hidden_test_lines(lab: str) -> list[str]:
    """The lines of the source notebook's hidden test blocks (long enough to be telling)."""
    nb = nbformat.read(ROOT / config.SOURCE_DIR / lab / f"{lab}.ipynb", as_version=4)
    lines = []
    for cell in nb.cells:
        for block in re.findall(r"### BEGIN HIDDEN TESTS\n(.*?)### END HIDDEN TESTS", cell.source, re.S):
            lines += [line.strip() for line in block.splitlines() if len(line.strip()) > 12]
    return lines


@pytest.fixture(scope="module")
def classroom():
    with make_classroom("course-exchange-") as made:
        yield made


def _write_as(users: Users, user: str, path: Path, notebook) -> None:
    users.run(user, "sh", "-c", 'cat > "$0"', str(path), input=nbformat.writes(notebook))


def _solutions_of(notebook) -> dict:
    return {c.metadata["nbgrader"]["grade_id"]: c.source for c in notebook.cells
            if c.metadata.get("nbgrader", {}).get("solution")}


def test_the_exchange_between_real_users(classroom):
    from nbgrader.api import Gradebook
    from autograder import grading, samples
    c = classroom
    users, ta, alice, bob = c["users"], c["instructor"], c["alice"], c["bob"]
    course = c["exchange"] / config.COURSE_ID
    as_ta = dict(cwd=ROOT, env=c["course_env"], sees_course=True)

    # the instructor generates the student version (into the gradebook too) and releases it
    users.nbgrader(ta, "generate_assignment", LAB, "--force", **as_ta)
    users.nbgrader(ta, "release_assignment", LAB, **as_ta)
    assert (course / "outbound" / LAB / f"{LAB}.ipynb").exists()
    assert oct(course.joinpath("inbound").stat().st_mode & 0o777) == "0o733"  # write, no listing

    # the students fetch it into their homes
    for student in (alice, bob):
        users.nbgrader(student, "fetch_assignment", LAB)
    homes = {s: Path(pwd.getpwnam(s).pw_dir) for s in (alice, bob)}
    fetched = nbformat.read(homes[alice] / LAB / f"{LAB}.ipynb", as_version=4)
    with course_env(**c["course_env"]):
        assert fetched.cells == grading.released_notebook(LAB).cells
        complete, buggy = samples.make_sample(LAB, "reference"), samples.make_sample(LAB, "buggy")

    # alice submits the lab as fetched, the due date passes, she submits her solution (late);
    # bob submits his (buggy) solution
    users.nbgrader(alice, "submit", LAB)
    time.sleep(1.1)
    due = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    users.nbgrader(ta, "db", "assignment", "add", LAB, f"--duedate={due}", **as_ta)
    time.sleep(1.1)
    _write_as(users, alice, homes[alice] / LAB / f"{LAB}.ipynb", complete)
    users.nbgrader(alice, "submit", LAB)
    _write_as(users, bob, homes[bob] / LAB / f"{LAB}.ipynb", buggy)
    users.nbgrader(bob, "submit", LAB)

    # a student cannot read another's submission: the inbound folder cannot be listed, alice's
    # home cannot be entered, and the submission's name ends in nbgrader's random part
    inbound = sorted(p.name for p in (course / "inbound").iterdir())
    alices = [n for n in inbound if n.startswith(f"{alice}+{LAB}+")]
    assert len(alices) == 2 and len([n for n in inbound if n.startswith(f"{bob}+")]) == 1, inbound
    assert all(len(n.rsplit("+", 1)[1]) >= 12 for n in inbound), inbound  # 9 random bytes
    for attempt in (["ls", str(course / "inbound")],
                    ["cat", str(homes[alice] / LAB / f"{LAB}.ipynb")],
                    ["ls", str(course / "inbound" / alices[-1].rsplit("+", 1)[0])]):
        proc = users.run(bob, *attempt, check=False)
        assert proc.returncode != 0 and ("Permission denied" in proc.stderr or "No such file" in proc.stderr), (attempt, proc)
    listed = users.run(bob, str(users.python / "bin" / "python"), "-c",
                       f"import glob; print(glob.glob({str(course / 'inbound' / '*')!r}))").stdout
    assert listed.strip() == "[]"

    # the instructor collects: the latest submission of each student
    users.nbgrader(ta, "collect", LAB, **as_ta)
    latest = sorted(alices, key=lambda n: n.split("+")[2])[-1]
    collected = c["grading"] / "submitted" / alice / LAB
    assert (collected / "timestamp.txt").read_text().strip() == latest.split("+")[2]
    assert _solutions_of(nbformat.read(collected / f"{LAB}.ipynb", as_version=4)) == _solutions_of(complete)

    # the course grades in its sandbox, then writes the feedback
    with course_env(**c["course_env"]):
        assert grading.sandboxed()
        outcomes = grading.autograde([(alice, LAB), (bob, LAB)], workers=2)
        grading.feedback([LAB])
    assert sorted(o.student for o in outcomes) == sorted([alice, bob]) and all(o.ok for o in outcomes), outcomes
    with Gradebook(f"sqlite:///{c['grading'] / 'gradebook.db'}", config.COURSE_ID) as gb:
        subs = {s.student.id: s for s in gb.find_assignment(LAB).submissions}
        assert sorted(subs) == sorted([alice, bob])  # alice's two submissions: graded once
        a, b = subs[alice], subs[bob]
        assert a.timestamp.strftime("%Y-%m-%d %H:%M:%S") in latest and a.total_seconds_late > 0
        correctness = {s: sum(g.score for nb in sub.notebooks for g in nb.grades if not g.name.startswith("speed_"))
                       for s, sub in subs.items()}
        most = sum(g.max_score for nb in a.notebooks for g in nb.grades if not g.name.startswith("speed_"))
        assert correctness[alice] == most > correctness[bob] > 0, correctness

    # the instructor releases the feedback; each student fetches their own
    users.nbgrader(ta, "release_feedback", LAB, **as_ta)
    assert users.run(bob, "ls", str(course / "feedback"), check=False).returncode != 0  # 0711: no listing
    hidden = _hidden_test_lines(LAB)
    assert hidden, "the lab has hidden tests"
    for student in (alice, bob):
        users.nbgrader(student, "fetch_feedback", LAB)
        pages = sorted((homes[student] / LAB / "feedback").glob(f"*/{LAB}.html"))
        assert len(pages) == 1, pages  # alice: feedback on the graded submission only
        text = html.unescape(pages[0].read_text())
        assert f"{LAB}" in text and "Score" in text
        leaked = [line for line in hidden if line in text]
        assert not leaked, f"the feedback shows hidden test lines: {leaked[:3]}"
    assert pages[0].stat().st_uid == pwd.getpwnam(bob).pw_uid
    print(f"\nexchange: {json.dumps({o.student: round(o.seconds) for o in outcomes})} s of grading")
