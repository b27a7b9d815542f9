"""The grading pipeline: release, submit, autograde, feedback, export, gradebook.

Every step runs the real `nbgrader` command in a child process. A child process per
submission is what keeps one broken or endless submission from taking the batch down:
it gets a wall-clock limit on top of nbgrader's per-cell timeout, its log is kept, and
the batch goes on to the next one.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, asdict
from pathlib import Path

import nbformat

from . import config, samples

SUBMISSION_TIMEOUT_S = 20 * 60  # a whole notebook; cells have their own, shorter limit


def all_labs() -> list[str]:
    src = config.ROOT / config.SOURCE_DIR
    return sorted(p.name for p in src.iterdir() if (p / f"{p.name}.ipynb").exists())


def nbgrader(*args: str, timeout: float | None = None, log: Path | None = None) -> subprocess.CompletedProcess:
    """Run `nbgrader ARGS` from the course root with the course config."""
    config.grading_dir().mkdir(parents=True, exist_ok=True)  # nbgrader creates its database there
    # the venv's bin/ first on PATH: nbgrader runs `alembic`, and kernels must be this Python
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = dict(os.environ, PATH=path, COURSE_GRADING_DIR=str(config.grading_dir()), PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=config.ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(f"$ nbgrader {' '.join(args)}\n{proc.stdout}\n{proc.stderr}")
    return proc


def release(labs: list[str], release_folder: str | None = None) -> None:
    """Generate the student version of each lab (labs/ unless `release_folder` is given)."""
    extra = [f"--CourseDirectory.release_directory={release_folder}"] if release_folder else []
    for lab in labs:
        proc = nbgrader("generate_assignment", lab, "--force", *extra)
        if proc.returncode != 0:
            raise RuntimeError(f"nbgrader generate_assignment {lab} failed:\n{proc.stdout}\n{proc.stderr}")
        print(f"released {lab} -> {release_folder or config.RELEASE_DIR}/{lab}/")


def submission_dir(student: str, lab: str) -> Path:
    return config.grading_dir() / "submitted" / student / lab


def submit(student: str, lab: str, notebook) -> Path:
    """Place a notebook where nbgrader expects a collected submission."""
    folder = submission_dir(student, lab)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    path = folder / f"{lab}.ipynb"
    if isinstance(notebook, (str, Path)):
        shutil.copy(notebook, path)
    else:
        nbformat.write(notebook, path)
    (folder / "timestamp.txt").write_text(time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))
    return path


def submit_samples(labs: list[str]) -> list[tuple[str, str]]:
    pairs = []
    for lab in labs:
        for student in samples.students_for(lab):
            submit(student, lab, samples.make_sample(lab, student))
            pairs.append((student, lab))
    return pairs


def submit_folder(folder: Path, labs: list[str]) -> list[tuple[str, str]]:
    """Copy a folder laid out as FOLDER/<student>/<lab>/<lab>.ipynb into the grading area."""
    pairs = []
    for student_dir in sorted(p for p in Path(folder).iterdir() if p.is_dir()):
        for lab in labs:
            nb = student_dir / lab / f"{lab}.ipynb"
            if nb.exists():
                submit(student_dir.name, lab, nb)
                pairs.append((student_dir.name, lab))
    return pairs


@dataclass
class Outcome:
    student: str
    lab: str
    ok: bool
    seconds: float
    message: str = ""


def autograde_one(student: str, lab: str) -> Outcome:
    log = config.grading_dir() / "logs" / f"autograde-{student}-{lab}.log"
    start = time.time()
    try:
        proc = nbgrader("autograde", lab, "--student", student, "--force",
                        timeout=SUBMISSION_TIMEOUT_S, log=log)
    except subprocess.TimeoutExpired:
        return Outcome(student, lab, False, time.time() - start,
                       f"stopped after {SUBMISSION_TIMEOUT_S} s; see {log}")
    ok = proc.returncode == 0
    message = "" if ok else f"nbgrader autograde failed; see {log}"
    return Outcome(student, lab, ok, time.time() - start, message)


def autograde(pairs: list[tuple[str, str]]) -> list[Outcome]:
    from tqdm.auto import tqdm
    outcomes = []
    with tqdm(pairs, desc="autograding", unit="submission") as bar:
        for student, lab in bar:
            bar.set_postfix_str(f"{student}/{lab}")
            outcomes.append(autograde_one(student, lab))
    status = config.grading_dir() / "status.json"
    status.write_text(json.dumps([asdict(o) for o in outcomes], indent=1))
    return outcomes


def feedback(labs: list[str]) -> None:
    for lab in labs:
        nbgrader("generate_feedback", lab, "--force",
                 log=config.grading_dir() / "logs" / f"feedback-{lab}.log")


def export(csv_path: Path) -> Path:
    proc = nbgrader("export", f"--to={csv_path}", log=config.grading_dir() / "logs" / "export.log")
    if proc.returncode != 0:
        raise RuntimeError(f"nbgrader export failed:\n{proc.stderr}")
    return csv_path
