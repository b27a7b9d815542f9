"""The grading pipeline: release, submit, autograde, feedback, export, gradebook.

Every step runs the real `nbgrader` command in a child process of its own (forked from a
server that has imported nbgrader once: autograder.nbrunner). A child process per
submission is what keeps one broken or endless submission from taking the batch down:
it gets a wall-clock limit on top of nbgrader's per-cell timeout, its log is kept, and
the batch goes on to the next one.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, asdict
from pathlib import Path

import nbformat

from . import config, grader, nbrunner, preflight, samples, sandbox

SUBMISSION_TIMEOUT_S = 20 * 60  # a whole notebook; cells have their own, shorter limit


def all_labs() -> list[str]:
    src = config.ROOT / config.SOURCE_DIR
    return sorted(p.name for p in src.iterdir() if (p / f"{p.name}.ipynb").exists())


@functools.cache
def sandboxed() -> bool:
    """Grade in the sandbox when this machine can build it; say so once when it cannot."""
    ok = sandbox.available()
    if not ok:
        print("note: no sandbox on this machine (needs root and util-linux namespaces); "
              "submissions run in plain kernels", file=sys.stderr)
    return ok


def nbgrader(*args: str, timeout: float | None = None, log: Path | None = None,
             isolate: bool = False, threads: int | None = None, lab: str | None = None,
             cell_limit: dict | None = None) -> subprocess.CompletedProcess:
    """Run `nbgrader ARGS` from the course root with the course config.

    isolate=True runs the notebooks' kernels in the sandbox (autograde does), or where there
    is none in the course-grader kernel; both bind the hidden tests' references for `lab`
    before the notebook's first cell. `threads` caps torch's CPU threads so parallel workers
    do not fight over the cores; `cell_limit` is a sample's own short limit (samples.cell_limit).
    """
    grading = config.grading_dir()
    grading.mkdir(parents=True, exist_ok=True)  # nbgrader creates its database there
    # the venv's bin/ first on PATH: nbgrader runs `alembic`, and kernels must be this Python
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = dict(os.environ, PATH=path, COURSE_GRADING_DIR=str(grading), PYTHONUNBUFFERED="1")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    if lab:
        env["COURSE_LAB"] = lab
    if cell_limit:
        env["COURSE_SAMPLE_CELL_LIMIT"] = json.dumps(cell_limit)
    env["COURSE_GPU_LOCK_DIR"] = str(gpu_lock_dir())
    runtime = None
    if isolate:
        kernelspecs = grader.install_kernelspec(grading / "jupyter")
        env["JUPYTER_PATH"] = os.pathsep.join([str(kernelspecs), os.environ.get("JUPYTER_PATH", "")])
        if sandboxed():
            runtime = sandbox.new_runtime_dir()
            sandbox.install_kernelspec(kernelspecs)
            env["COURSE_SANDBOX_RUNTIME"] = str(runtime)
        else:
            env["COURSE_GRADER_KERNEL"] = grader.KERNEL_NAME
    try:
        proc = nbrunner.run(list(args), env=env, cwd=config.ROOT, timeout=timeout)
    finally:
        if runtime is not None:
            sandbox.kill_leftovers(runtime)  # last resort: no kernel outlives its grading run
            shutil.rmtree(runtime, ignore_errors=True)
            sandbox.cleanup_cgroups()
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(f"$ nbgrader {' '.join(args)}\n{proc.stdout}\n{proc.stderr}")
    return proc


def gpu_lock_dir() -> Path:
    """One lock file per GPU, shared by every grading worker: a speed cell holds its GPU's lock
    while it times (genfast.bench). The sandbox sees /run read-only, and a read-only file can be
    locked, so the files are made here, before any kernel starts."""
    folder = Path(os.environ.get("COURSE_GPU_LOCK_DIR", "/run/course-gpu-locks"))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(8):
            (folder / f"course-gpu-{index}.lock").touch()
    except OSError:  # not root: a folder of our own
        folder = config.grading_dir() / "gpu-locks"
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(8):
            (folder / f"course-gpu-{index}.lock").touch()
    return folder


def release(labs: list[str]) -> None:
    """Generate the student version of each lab into the release folder (labs/)."""
    for lab in labs:
        proc = nbgrader("generate_assignment", lab, "--force")
        if proc.returncode != 0:
            raise RuntimeError(f"nbgrader generate_assignment {lab} failed:\n{proc.stdout}\n{proc.stderr}")
        print(f"released {lab} -> {config.release_dir() / lab}/")


def released_notebook(lab: str):
    return nbformat.read(config.release_dir() / lab / f"{lab}.ipynb", as_version=4)


def submission_dir(student: str, lab: str) -> Path:
    return config.grading_dir() / "submitted" / student / lab


def submit(student: str, lab: str, notebook, cell_limit: dict | None = None) -> Path:
    """Place a notebook where nbgrader expects a collected submission. Only the course's own
    samples pass `cell_limit` (a short limit of their own, samples.cell_limit, recorded on the
    grader's side); every other submission gets the course's limit."""
    _update_json(_cell_limits_path(), {f"{student}/{lab}": cell_limit})
    folder = submission_dir(student, lab)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    path = folder / f"{lab}.ipynb"
    nbformat.write(notebook, path)
    (folder / "timestamp.txt").write_text(time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))
    return path


def submit_samples(labs: list[str], students: list[str] | None = None) -> list[tuple[str, str]]:
    pairs = []
    for lab in labs:
        for student in samples.students_for(lab):
            if students and student not in students:
                continue
            nb = samples.make_sample(lab, student)
            preflight.enforce_policy(nb, lab, released_notebook(lab))  # samples obey it like anyone
            submit(student, lab, nb, cell_limit=samples.cell_limit(lab, student))
            pairs.append((student, lab))
    # the longest first (a worker left alone with one long notebook at the end wastes a core)
    longest_first = {"hangs": 0, "reference": 1, "buggy": 2, "untouched": 3}
    return sorted(pairs, key=lambda pair: longest_first.get(pair[0], 1))


def submit_folder(folder: Path, labs: list[str]) -> list[tuple[str, str]]:
    """Collect FOLDER/<student>/<lab>/*.ipynb, checking each before nbgrader sees it."""
    pairs, notes = [], {}
    for student_dir in sorted(p for p in Path(folder).iterdir() if p.is_dir()):
        for lab in labs:
            if not (student_dir / lab).exists():
                continue
            verdict = preflight.check(student_dir / lab, lab, released_notebook(lab))
            submit(student_dir.name, lab, verdict.notebook)
            if verdict.problem or verdict.notes:
                notes[f"{student_dir.name}/{lab}"] = verdict.problem or " ".join(verdict.notes)
            pairs.append((student_dir.name, lab))
    _update_json(config.grading_dir() / "notes.json", notes)
    return pairs


@dataclass
class Outcome:
    student: str
    lab: str
    ok: bool
    seconds: float
    message: str = ""
    submitted_at: str = ""


def _update_json(path: Path, entries: dict) -> dict:
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update(entries)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)  # atomic: an interrupted batch never leaves a half-written file
    return data


def _cell_limits_path() -> Path:
    config.grading_dir().mkdir(parents=True, exist_ok=True)
    return config.grading_dir() / "cell_limits.json"


def _cell_limit(student: str, lab: str) -> dict | None:
    path = _cell_limits_path()
    return json.loads(path.read_text()).get(f"{student}/{lab}") if path.exists() else None


def _timestamp(student: str, lab: str) -> str:
    stamp = submission_dir(student, lab) / "timestamp.txt"
    return stamp.read_text() if stamp.exists() else ""


def autograde_one(student: str, lab: str, threads: int | None = None) -> Outcome:
    """Autograde one submission; if nbgrader itself fails on it, grade the unfilled lab instead
    (zero, with the reason at the top of the feedback) so that every submission gets a grade."""
    log = config.grading_dir() / "logs" / f"autograde-{student}-{lab}.log"
    start = time.time()
    notes = json.loads((config.grading_dir() / "notes.json").read_text()) \
        if (config.grading_dir() / "notes.json").exists() else {}
    message = notes.get(f"{student}/{lab}", "")
    cell_limit = _cell_limit(student, lab)
    try:
        proc = nbgrader("autograde", lab, "--student", student, "--force", timeout=SUBMISSION_TIMEOUT_S,
                        log=log, isolate=True, threads=threads, lab=lab, cell_limit=cell_limit)
        failure = "" if proc.returncode == 0 else _last_error(proc.stdout + proc.stderr)
    except subprocess.TimeoutExpired:
        failure = f"grading took longer than {SUBMISSION_TIMEOUT_S} s"
    if failure:
        message = f"the notebook could not be graded ({failure}); graded as the unfilled lab"
        submit(student, lab, preflight.rejected(released_notebook(lab), message), cell_limit=cell_limit)
        proc = nbgrader("autograde", lab, "--student", student, "--force",
                        timeout=SUBMISSION_TIMEOUT_S, log=log.with_suffix(".fallback.log"), isolate=True,
                        threads=threads, lab=lab)
        if proc.returncode != 0:
            return Outcome(student, lab, False, time.time() - start, f"{message}; fallback failed, see {log}")
    return Outcome(student, lab, True, time.time() - start, message, _timestamp(student, lab))


def _last_error(output: str) -> str:
    """nbgrader's first specific error line (its generic 'see the traceback' lines say nothing)."""
    lines = [line.split("ERROR]", 1)[1].strip() for line in output.splitlines() if "| ERROR]" in line]
    useful = [line for line in lines if line and not line.startswith(("Please see", "There was an error"))]
    return (useful[0] if useful else lines[-1] if lines else "nbgrader failed")[:300]


def autograde(pairs: list[tuple[str, str]], workers: int = 1, resume: bool = False) -> list[Outcome]:
    """Autograde submissions with a progress bar, `workers` at a time.

    Progress is saved after every submission (grading/status.json); with resume=True a
    submission already graded at the same timestamp is skipped, so an interrupted batch
    picks up where it stopped without grading anything twice.
    """
    from tqdm.auto import tqdm
    status_path = config.grading_dir() / "status.json"
    status = json.loads(status_path.read_text()) if status_path.exists() else {}
    done, todo = [], []
    for student, lab in pairs:
        previous = status.get(f"{student}/{lab}")
        if resume and previous and previous["ok"] and previous["submitted_at"] == _timestamp(student, lab):
            done.append(Outcome(**previous))
        else:
            todo.append((student, lab))
    from . import gradebook
    gradebook.add_students(student for student, _ in todo)  # not by two workers at once (a race)
    with tqdm(total=len(pairs), initial=len(done), desc="autograding", unit="submission") as bar, \
            ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        threads = max(1, (os.cpu_count() or 1) // max(1, workers))  # one share of the cores each
        futures = [pool.submit(autograde_one, student, lab, threads) for student, lab in todo]
        for future in as_completed(futures):
            outcome = future.result()
            done.append(outcome)
            _update_json(status_path, {f"{outcome.student}/{outcome.lab}": asdict(outcome)})
            bar.set_postfix_str(f"{outcome.student}/{outcome.lab}")
            bar.update()
    return done


def feedback(labs: list[str], workers: int = 2) -> None:
    """Feedback pages for every graded submission of `labs`, `workers` labs at a time (each lab's
    pages go to their own folders, and nbgrader only reads the gradebook here)."""
    def one(lab: str) -> None:
        nbgrader("generate_feedback", lab, "--force", log=config.grading_dir() / "logs" / f"feedback-{lab}.log")
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(one, labs))


def export(csv_path: Path) -> Path:
    proc = nbgrader("export", f"--to={csv_path}", log=config.grading_dir() / "logs" / "export.log")
    if proc.returncode != 0:
        raise RuntimeError(f"nbgrader export failed:\n{proc.stderr}")
    return csv_path
