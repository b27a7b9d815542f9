"""Grade a class on a Slurm cluster: one job array, a private folder per task, one merge.

    python -m autograder autograde [LAB ...] --slurm [--partition P] [--gres gpu:1] [--array-parallel K]
    python -m autograder status

A class of 300 students and eight labs is 2,400 notebooks. Slurm schedules them; this module
only cuts the work into an array, grades each piece where the cluster puts it, and brings the
results home. Three steps, all files under grading/slurm/<run>/:

1. plan (here, on the submit host): the submissions are cut into chunks, one array task per
   chunk (`plan.json`); a consistent copy of the gradebook (SQLite's backup API) is taken for the
   tasks to start from. Then `sbatch --array=0-N%K` for the tasks and one `finish` job with
   `--dependency=afterany:<array>`.
2. task i (on a node): copies its chunk's submissions and the gradebook copy into its own folder
   tasks/<i>/ and grades there with `grading.autograde_one` (the course's sandbox, the same code as
   a local batch), with COURSE_GRADING_DIR pointing at that folder. As root it first leaves a
   mount namespace in which the rest of the grading folder is not mounted at all: a submission
   sees neither the class's submissions nor the gradebook nor other tasks, even from a node where
   the grading folder is a shared file system. It writes result.json last, atomically: a task
   without one did not finish.
3. finish (one job, after every task ended, however it ended): a task without a result is given a
   second try (a new array of just those tasks and a new finish job after it); after the second
   try it is graded as failed, with Slurm's reason. Then the merge: under an exclusive lock, one
   process copies each task's gradebook rows into grading/gradebook.db with nbgrader's own
   Gradebook API, moves its autograded notebooks into grading/autograded/ and records the
   outcomes in grading/status.json.

The one gradebook. nbgrader's gradebook is a SQLite file, and SQLite over NFS with writers on
several nodes corrupts. So no task ever opens grading/gradebook.db: tasks write private copies,
and only a finish job writes the real one, one at a time (the lock file grading/slurm/merge.lock;
there is one finish job per array anyway, and it runs after the array). The merge is idempotent:
a task's rows replace that submission's rows, and merged tasks are recorded.

Resume. `--resume` first merges whatever earlier, interrupted runs finished (their tasks' results
are kept), then grades only what is not yet graded at its current timestamp (as a local
`autograde --resume` does). A run whose jobs are still in the queue is left alone.
"""
from __future__ import annotations

import fcntl
import json
import math
import os
import shlex
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from . import config  # not grading (it imports torch): a task's set-up and the merge need neither

MAX_TASKS = 1000           # Slurm's default MaxArraySize is 1001: bigger classes get chunks
ATTEMPTS = 2               # a task that dies is tried once more, then graded as failed
POLL_S = 2.0


def add_arguments(parser) -> None:
    """The `--slurm` options of `python -m autograder autograde`."""
    g = parser.add_argument_group("grading on a Slurm cluster")
    g.add_argument("--slurm", action="store_true", help="grade as a Slurm job array (see autograder/slurm.py)")
    g.add_argument("--partition", default=None, help="Slurm partition")
    g.add_argument("--gres", default=None, help="generic resources per task, e.g. gpu:1 when speed is graded")
    g.add_argument("--array-parallel", type=int, default=None, help="at most K tasks running at once (%%K)")
    g.add_argument("--chunk", type=int, default=None, help="submissions per task (default 1, more above 1000)")
    g.add_argument("--cpus-per-task", type=int, default=1)
    g.add_argument("--time", default=None, help="time limit per task (Slurm syntax, e.g. 30:00)")
    g.add_argument("--no-wait", action="store_true", help="submit and return; `status` shows progress")


# --- small helpers ---------------------------------------------------------------------------

def slurm_dir() -> Path:
    return config.grading_dir() / "slurm"


def _read(path: Path, default=None):
    return json.loads(path.read_text()) if path.exists() else default


def _write(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)  # atomic: a reader sees the old file or the new one, never half of one


def _sbatch(args: list[str]) -> str:
    proc = subprocess.run(["sbatch", "--parsable", *args], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"sbatch {shlex.join(args)} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout.strip().split(";")[0]  # "jobid" or "jobid;cluster"


def _copy_gradebook(source: Path, dest: Path) -> None:
    """A consistent copy even while someone reads or writes the database."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    src = sqlite3.connect(source) if source.exists() else sqlite3.connect(":memory:")
    out = sqlite3.connect(dest)
    with out:
        src.backup(out)
    src.close()
    out.close()


def _timestamp(student: str, lab: str) -> str:
    stamp = config.grading_dir() / "submitted" / student / lab / "timestamp.txt"
    return stamp.read_text() if stamp.exists() else ""


def _update_status(entries: dict) -> None:
    """grading/status.json, in the format `autograde --resume` reads (grading.Outcome as dicts)."""
    path = config.grading_dir() / "status.json"
    _write(path, {**_read(path, {}), **entries})


def _task_dir(run: Path, index: int) -> Path:
    return run / "tasks" / f"{index:05d}"


# --- 1. plan and submit ----------------------------------------------------------------------

def autograde(pairs: list[tuple[str, str]], args) -> list:
    """Grade `pairs` on Slurm; wait for the merge unless --no-wait. Returns the outcomes."""
    if args.resume:
        _close_interrupted_runs()
        pairs = _not_yet_graded(pairs)
        if not pairs:
            print("everything is graded already")
            return []
    run = submit(pairs, partition=args.partition, gres=args.gres, parallel=args.array_parallel,
                 chunk=args.chunk, cpus=args.cpus_per_task, time_limit=args.time)
    if args.no_wait:
        print(f"submitted {run.name}; `python -m autograder status` shows its progress")
        return []
    return wait(run)


def submit(pairs, partition=None, gres=None, parallel=None, chunk=None, cpus=1, time_limit=None) -> Path:
    """Write the plan of a new run and submit its array and its finish job."""
    if not pairs:
        raise ValueError("nothing to grade")
    chunk = chunk or max(1, math.ceil(len(pairs) / MAX_TASKS))
    tasks = [pairs[i:i + chunk] for i in range(0, len(pairs), chunk)]
    run = slurm_dir() / time.strftime("run-%Y%m%d-%H%M%S")
    while run.exists():
        run = run.with_name(run.name + "x")
    (run / "logs").mkdir(parents=True)
    _copy_gradebook(config.grading_dir() / "gradebook.db", run / "gradebook.db")
    options = [f"--cpus-per-task={cpus}"]
    options += [f"--partition={partition}"] if partition else []
    options += [f"--gres={gres}"] if gres else []
    options += [f"--time={time_limit}"] if time_limit else []
    _write(run / "plan.json", dict(tasks=tasks, options=options, parallel=parallel,
                                   grading_dir=str(config.grading_dir()), python=sys.executable))
    _write(run / "state.json", dict(jobs=[], attempts={}, failed={}, merged=[], done=False))
    script = run / "task.sh"
    # the job runs the same Python from the course root, with the environment of this shell
    # (sbatch's default --export=ALL: COURSE_* settings travel with it)
    script.write_text("#!/bin/bash\n"
                      f"cd {shlex.quote(str(config.ROOT))}\n"
                      f"exec {shlex.quote(sys.executable)} -m autograder.slurm \"$@\"\n")
    script.chmod(0o755)
    _submit_round(run, list(range(len(tasks))), attempt=1)
    print(f"{run.name}: {len(pairs)} submissions in {len(tasks)} array tasks")
    return run


def _submit_round(run: Path, indices: list[int], attempt: int) -> None:
    """One array over `indices` (task numbers of the plan), then a finish job after it."""
    plan, state = _read(run / "plan.json"), _read(run / "state.json")
    spec = ",".join(map(str, indices)) + (f"%{plan['parallel']}" if plan.get("parallel") else "")
    array = _sbatch([f"--array={spec}", f"--job-name=grade-{run.name}", *plan["options"],
                     f"--output={run / 'logs' / 'task-%a.log'}", "--open-mode=append",
                     str(run / "task.sh"), "task", str(run)])
    finish = _sbatch([f"--dependency=afterany:{array}", f"--job-name=merge-{run.name}",
                      "--cpus-per-task=1", "--kill-on-invalid-dep=no",
                      *[o for o in plan["options"] if o.startswith(("--partition", "--time"))],
                      f"--output={run / 'logs' / 'finish.log'}", "--open-mode=append",
                      str(run / "task.sh"), "finish", str(run), array])
    for index in indices:
        state["attempts"][str(index)] = attempt
    state["jobs"] += [dict(array=array, finish=finish, attempt=attempt, tasks=indices)]
    _write(run / "state.json", state)


# --- 2. one array task -----------------------------------------------------------------------

HIDE_GRADING = r"""
set -eu
mount --make-rprivate /
stash=$(mktemp -d)
mount --bind "$PRIVATE" "$stash"
mount -t tmpfs -o size=1m,mode=755 tmpfs "$GRADING"
mkdir -p "$PRIVATE"
mount --bind "$stash" "$PRIVATE"
umount "$stash"
rmdir "$stash"
exec "$@"
"""


def task(run: Path, index: int) -> None:
    """Array task `index`: prepare its private folder, then grade in it (`grade_private`)."""
    plan = _read(run / "plan.json")
    private = _task_dir(run, index)
    if (private / "result.json").exists():
        return  # graded already (a requeued task): nothing to redo
    shutil.rmtree(private, ignore_errors=True)  # what a killed attempt left
    grading_dir = Path(plan["grading_dir"])
    pairs = [tuple(p) for p in plan["tasks"][index]]
    for student, lab in pairs:
        shutil.copytree(grading_dir / "submitted" / student / lab, private / "submitted" / student / lab)
    shutil.copy(run / "gradebook.db", private / "gradebook.db")
    # the grading folder's per-submission notes (preflight notes, the samples' cell limits, ...):
    # this chunk's entries only
    keys = {f"{student}/{lab}" for student, lab in pairs}
    for path in grading_dir.glob("*.json"):
        entries = _read(path)
        if path.name != "status.json" and isinstance(entries, dict):
            _write(private / path.name, {k: v for k, v in entries.items() if k in keys})
    _write(private / "pairs.json", pairs)
    command = [sys.executable, "-m", "autograder.slurm", "grade-private", str(private)]
    env = dict(os.environ, COURSE_GRADING_DIR=str(private))
    if os.geteuid() == 0 and shutil.which("unshare"):
        # the rest of the grading folder is not even mounted where this task grades
        env.update(PRIVATE=str(private), GRADING=str(grading_dir))
        command = ["unshare", "--mount", "sh", "-c", HIDE_GRADING, "hide", *command]
    elif os.environ.get("COURSE_SANDBOX") != "0":
        sys.exit("grading tasks run as root (the course sandbox needs it); "
                 "set COURSE_SANDBOX=0 to grade in plain kernels instead")
    sys.exit(subprocess.run(command, env=env, cwd=config.ROOT).returncode)


def grade_private(private: Path) -> None:
    """Inside the task: grade its pairs with the course's pipeline, then write result.json."""
    from . import grading
    assert config.grading_dir() == private.resolve(), "COURSE_GRADING_DIR must be the private folder"
    threads = int(os.environ.get("SLURM_CPUS_PER_TASK") or os.environ.get("SLURM_CPUS_ON_NODE") or 1)
    start, outcomes = time.time(), []
    for student, lab in _read(private / "pairs.json"):
        outcome = grading.autograde_one(student, lab, threads=threads)
        print(f"{student}/{lab}: {'ok' if outcome.ok else 'FAILED'} in {outcome.seconds:.1f} s "
              f"{outcome.message}", flush=True)
        outcomes.append(asdict(outcome))
    # with --gres gpu:1 Slurm hands the task its own GPU and says which (CUDA_VISIBLE_DEVICES)
    gpus = os.environ.get("SLURM_JOB_GPUS") or os.environ.get("CUDA_VISIBLE_DEVICES")
    _write(private / "result.json", dict(outcomes=outcomes, node=socket.gethostname(), gpus=gpus,
                                         seconds=time.time() - start))


# --- 3. finish: retry, fail, merge -----------------------------------------------------------

def _slurm_reason(array: str, index: int) -> str:
    """What Slurm says about one array task: state and exit code (sacct, else scontrol)."""
    job = f"{array}_{index}"
    proc = subprocess.run(["sacct", "-n", "-P", "-X", "-j", job, "-o", "State,ExitCode,Reason"],
                          capture_output=True, text=True, timeout=60)
    if proc.returncode == 0 and proc.stdout.strip():
        state, code, reason = (proc.stdout.strip().splitlines()[-1].split("|") + ["", ""])[:3]
        return f"Slurm: {state}, exit code {code}" + (f", {reason}" if reason not in ("", "None") else "")
    proc = subprocess.run(["scontrol", "-o", "show", "job", job], capture_output=True, text=True, timeout=60)
    fields = dict(w.split("=", 1) for w in proc.stdout.split() if "=" in w)
    if "JobState" in fields:
        reason = fields.get("Reason", "None")
        return (f"Slurm: {fields['JobState']}, exit code {fields.get('ExitCode', '?')}"
                + (f", {reason}" if reason != "None" else ""))
    return "Slurm no longer knows the task"


def _log_tail(run: Path, index: int) -> str:
    log = run / "logs" / f"task-{index}.log"
    lines = [line for line in (log.read_text(errors="replace").splitlines() if log.exists() else []) if line.strip()]
    return lines[-1][:200] if lines else ""


def finish(run: Path, array: str) -> None:
    """After array `array` ended: retry the tasks that died once, fail them the second time, merge."""
    with _locked():
        state, plan = _read(run / "state.json"), _read(run / "plan.json")
        if state["done"]:
            return
        ended = next(j for j in state["jobs"] if j["array"] == array)["tasks"]
        dead = [i for i in ended if not (_task_dir(run, i) / "result.json").exists()]
        retry = [i for i in dead if state["attempts"][str(i)] < ATTEMPTS]
        for i in dead:
            if i not in retry:
                tail = _log_tail(run, i)
                state["failed"][str(i)] = _slurm_reason(array, i) + (f"; last line of its log: {tail}" if tail else "")
        _write(run / "state.json", state)
        _merge(run)
        if retry:
            print(f"retrying tasks {retry} (no result: {[_slurm_reason(array, i) for i in retry]})", flush=True)
            _submit_round(run, retry, attempt=state["attempts"][str(retry[0])] + 1)
            return
        state = _read(run / "state.json")
        for i, reason in state["failed"].items():
            _record_failed(run, plan["tasks"][int(i)], f"the grading task died {ATTEMPTS} times ({reason}); not graded")
        state["done"] = True
        _write(run / "state.json", state)


class _locked:
    """The one lock every writer of the gradebook holds (one merge at a time, across hosts
    through the shared file system's locks)."""

    def __enter__(self):
        slurm_dir().mkdir(parents=True, exist_ok=True)
        self.file = open(slurm_dir() / "merge.lock", "w")
        fcntl.lockf(self.file, fcntl.LOCK_EX)

    def __exit__(self, *exc):
        fcntl.lockf(self.file, fcntl.LOCK_UN)
        self.file.close()


def _merge(run: Path) -> None:
    """Copy every finished, not yet merged task into the gradebook, autograded/ and status.json."""
    from nbgrader.api import Gradebook
    state = _read(run / "state.json")
    todo = [i for i in range(len(_read(run / "plan.json")["tasks"]))
            if i not in state["merged"] and (_task_dir(run, i) / "result.json").exists()]
    if not todo:
        return
    main = config.grading_dir()
    with Gradebook(f"sqlite:///{main / 'gradebook.db'}", config.COURSE_ID) as gb:
        for i in todo:
            private = _task_dir(run, i)
            outcomes = _read(private / "result.json")["outcomes"]
            with Gradebook(f"sqlite:///{private / 'gradebook.db'}", config.COURSE_ID) as task_gb:
                for o in outcomes:
                    if o["ok"]:
                        _copy_submission(task_gb, gb, o["student"], o["lab"])
            for o in outcomes:
                for kind in ("autograded", "submitted"):  # submitted: a fallback replaced it
                    source = private / kind / o["student"] / o["lab"]
                    if source.exists():
                        dest = main / kind / o["student"] / o["lab"]
                        shutil.rmtree(dest, ignore_errors=True)
                        shutil.copytree(source, dest)
            for log in (private / "logs").glob("*.log"):
                (main / "logs").mkdir(exist_ok=True)
                shutil.copy(log, main / "logs" / log.name)
            _update_status({f"{o['student']}/{o['lab']}": o for o in outcomes})
            state["merged"].append(i)
            _write(run / "state.json", state)  # after each task: an interrupted merge resumes
    print(f"merged {len(todo)} task(s) into {main / 'gradebook.db'}", flush=True)


def _submission(gb, student: str, lab: str):
    """The gradebook's submission of `student` for `lab`, added (with a grade and a comment row
    for every cell) if it has none yet."""
    import warnings
    from nbgrader.api import MissingEntry
    from sqlalchemy.exc import SAWarning
    gb.update_or_create_student(student)
    try:
        return gb.find_submission(lab, student)
    except MissingEntry:
        with warnings.catch_warnings():  # nbgrader's add_submission trips SQLAlchemy's autoflush notes
            warnings.simplefilter("ignore", SAWarning)
            return gb.add_submission(lab, student)


def _copy_submission(src, dst, student: str, lab: str) -> None:
    """One submission's rows from gradebook `src` to gradebook `dst` (nbgrader's API both ways)."""
    sub = src.find_submission(lab, student)
    new = _submission(dst, student, lab)
    new.timestamp, new.extension = sub.timestamp, sub.extension
    for nb in sub.notebooks:
        dnb = dst.find_submission_notebook(nb.name, lab, student)
        dnb.flagged = nb.flagged
        dnb.late_submission_penalty = nb.late_submission_penalty
        for g in nb.grades:
            dg = dst.find_grade(g.name, nb.name, lab, student)
            dg.auto_score, dg.manual_score, dg.extra_credit = g.auto_score, g.manual_score, g.extra_credit
            dg.needs_manual_grade = g.needs_manual_grade
        for c in nb.comments:
            dc = dst.find_comment(c.name, nb.name, lab, student)
            dc.auto_comment, dc.manual_comment = c.auto_comment, c.manual_comment
    dst.db.commit()


def _record_failed(run: Path, pairs, message: str) -> None:
    """Graded as failed: zero points, the notebook flagged for the instructor, the reason in each
    answer's comment (the formgrader shows it) and in status.json."""
    from nbgrader.api import Gradebook
    from . import grading
    main = config.grading_dir()
    with Gradebook(f"sqlite:///{main / 'gradebook.db'}", config.COURSE_ID) as gb:
        for student, lab in pairs:
            gb.update_or_create_student(student)
            sub = _submission(gb, student, lab)
            for nb in sub.notebooks:
                nb.flagged = True
                for g in nb.grades:
                    g.auto_score, g.needs_manual_grade = 0.0, False
                for c in nb.comments:
                    c.auto_comment = message
            gb.db.commit()
            outcome = grading.Outcome(student, lab, False, 0.0, message, _timestamp(student, lab))
            _update_status({f"{student}/{lab}": asdict(outcome)})


# --- waiting, status, resume -----------------------------------------------------------------

def _runs() -> list[Path]:
    return sorted(p for p in slurm_dir().glob("run-*") if (p / "state.json").exists()) if slurm_dir().exists() else []


def _queued(run: Path) -> dict[str, str]:
    """{job id: Slurm state} of this run's jobs still in the queue."""
    ids = [j[k] for j in _read(run / "state.json")["jobs"] for k in ("array", "finish")]
    proc = subprocess.run(["squeue", "-h", "-j", ",".join(ids), "-o", "%i %T"], capture_output=True,
                          text=True, timeout=60)
    return dict(line.split(None, 1) for line in proc.stdout.splitlines() if line.strip())


def wait(run: Path) -> list:
    """Follow a run until its finish job has merged everything (a progress bar of tasks)."""
    from tqdm.auto import tqdm
    total = len(_read(run / "plan.json")["tasks"])
    with tqdm(total=total, desc="grading on Slurm", unit="task") as bar:
        while True:
            state = _read(run / "state.json")
            bar.n = sum((_task_dir(run, i) / "result.json").exists() for i in range(total)) + len(state["failed"])
            bar.refresh()
            if state["done"]:
                break
            if not _queued(run):  # nothing queued and not done: the finish job died too
                time.sleep(POLL_S)  # (or it is just writing its last file)
                if not _read(run / "state.json")["done"] and not _queued(run):
                    raise RuntimeError(f"{run.name} left the queue unfinished; "
                                       "`python -m autograder autograde --slurm --resume` picks it up")
            time.sleep(POLL_S)
    return _outcomes(run)


def _outcomes(run: Path) -> list:
    from . import grading
    status = _read(config.grading_dir() / "status.json", {})
    pairs = [tuple(p) for chunk in _read(run / "plan.json")["tasks"] for p in chunk]
    return [grading.Outcome(**status[f"{s}/{lab}"]) for s, lab in pairs if f"{s}/{lab}" in status]


def _close_interrupted_runs() -> None:
    """Merge what unfinished runs graded; the rest of their work is planned again."""
    for run in _runs():
        state = _read(run / "state.json")
        if state["done"]:
            continue
        if _queued(run):
            sys.exit(f"{run.name} is still in the queue: wait for it, or scancel its jobs, then --resume")
        with _locked():
            _merge(run)
            state = _read(run / "state.json")
            state["done"] = state["interrupted"] = True
            _write(run / "state.json", state)
        print(f"{run.name}: interrupted; merged the {len(state['merged'])} task(s) it finished")


def _not_yet_graded(pairs):
    status = _read(config.grading_dir() / "status.json", {})
    return [(s, lab) for s, lab in pairs
            if not (status.get(f"{s}/{lab}", {}).get("ok")
                    and status[f"{s}/{lab}"]["submitted_at"] == _timestamp(s, lab))]


def status() -> str:
    """Progress of every run: tasks graded, failed, queued; the failures with their reason."""
    lines = []
    for run in _runs():
        plan, state = _read(run / "plan.json"), _read(run / "state.json")
        total = len(plan["tasks"])
        graded = sum((_task_dir(run, i) / "result.json").exists() for i in range(total))
        queue = {} if state["done"] else _queued(run)
        where = "interrupted" if state.get("interrupted") else "done" if state["done"] else \
            ", ".join(f"{job} {s.lower()}" for job, s in sorted(queue.items())) or "not in the queue"
        retried = sum(1 for a in state["attempts"].values() if a > 1)
        lines.append(f"{run.name}: {graded}/{total} tasks graded, {len(state['merged'])} merged, "
                     f"{retried} retried, {len(state['failed'])} failed [{where}]")
        for i, reason in sorted(state["failed"].items()):
            lines.append(f"  task {i} {[f'{s}/{lab}' for s, lab in plan['tasks'][int(i)]]}: {reason}")
    return "\n".join(lines) or "no Slurm runs yet"


def main(argv: list[str]) -> None:
    command, rest = argv[0], argv[1:]
    if command in ("task", "finish"):  # the run's own grading folder, whatever the job's environment says
        os.environ["COURSE_GRADING_DIR"] = _read(Path(rest[0]) / "plan.json")["grading_dir"]
    if command == "task":
        task(Path(rest[0]), int(os.environ["SLURM_ARRAY_TASK_ID"]))
    elif command == "grade-private":
        grade_private(Path(rest[0]))
    elif command == "finish":
        finish(Path(rest[0]), rest[1])
    else:
        sys.exit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
