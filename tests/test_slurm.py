"""A class graded on a real Slurm cluster (munge, slurmctld, slurmd from Debian, started here).

The same submissions are graded twice: locally (`python -m autograder autograde`) and on the
cluster (`--slurm`, a job array, private folders, one merge), and the two gradebooks must agree
row for row. On the way: an array interrupted after its first task resumes without grading that
task again, and a task killed twice is graded as failed with Slurm's reason.
"""
import contextlib
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from autograder import config
from helpers import course_env, free_port

pytestmark = pytest.mark.classroom

ROOT = config.ROOT
# the two cheapest labs to grade, a full-marks sample of one and a partial-marks sample of the
# other (two notebooks keep the file within its time budget on two cores)
SUBMISSIONS = [("reference", "lab00_triton_warmup"), ("buggy", "lab04_kv_cache")]
LABS = sorted({lab for _, lab in SUBMISSIONS})


def _wait_for(what: str, condition, timeout: float, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


SLURM_CONF = """\
ClusterName=course-test
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={dir}/munge.sock
SlurmUser=root
SlurmdUser=root
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd.pid
SlurmctldLogFile={dir}/slurmctld.log
SlurmdLogFile={dir}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
GresTypes=gpu
ReturnToService=2
KillWait=5
MinJobAge=600
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=1000 Gres=gpu:1 State=UNKNOWN
PartitionName=grading Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""
# One "GPU" for the node: Slurm counts and hands out a generic resource by its device file, so
# /dev/null stands in for /dev/nvidia0. `--gres gpu:1` then goes through Slurm for real: a task
# waits for the GPU, gets it alone, and is told which (CUDA_VISIBLE_DEVICES); only the device is fake.
GRES_CONF = "AutoDetect=off\nName=gpu File=/dev/null\n"


@pytest.fixture(scope="module")
def cluster():
    """A one-node Slurm cluster of this machine: munged, slurmctld and slurmd in the foreground,
    with their own key, sockets, ports and state under a scratch folder; stopped at the end."""
    for tool in ("munged", "slurmctld", "slurmd", "sbatch"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} is missing: `make system-deps` installs munge and slurm-wlm")
    if os.geteuid() != 0:
        pytest.skip("the test cluster's daemons run as root")
    folder = Path(tempfile.mkdtemp(prefix="course-slurm-"))
    for sub in ("state", "spool", "munge"):
        (folder / sub).mkdir(mode=0o700)
    key = folder / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    host = socket.gethostname().split(".")[0]
    conf = folder / "slurm.conf"
    (folder / "gres.conf").write_text(GRES_CONF)  # read from slurm.conf's folder
    conf.write_text(SLURM_CONF.format(host=host, dir=folder, cpus=os.cpu_count() or 1,
                                      ctld_port=free_port(), slurmd_port=free_port()))
    env = dict(os.environ, SLURM_CONF=str(conf))
    logs, daemons = open(folder / "daemons.out", "w"), []
    try:
        daemons.append(subprocess.Popen(
            ["munged", "-F", "--force", f"--socket={folder}/munge.sock", f"--key-file={key}",
             f"--log-file={folder}/munge/munged.log", f"--pid-file={folder}/munged.pid",
             f"--seed-file={folder}/munge/seed"], stdout=logs, stderr=logs))
        _wait_for("munged's socket", lambda: (folder / "munge.sock").exists(), 30)
        daemons.append(subprocess.Popen(["slurmctld", "-D", "-f", str(conf)], env=env, stdout=logs, stderr=logs))
        daemons.append(subprocess.Popen(["slurmd", "-D", "-f", str(conf)], env=env, stdout=logs, stderr=logs))

        def idle():
            proc = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True)
            return proc.stdout.strip() == "idle"
        try:
            _wait_for("the node to register with slurmctld", idle, 60)
        except AssertionError:
            raise AssertionError((folder / "daemons.out").read_text()[-3000:])
        yield dict(env=env, folder=folder)
    finally:
        # jobs first (slurmstepd outlives slurmd), then the daemons, newest first
        subprocess.run(["scancel", "--full", "--user=root"], env=env, capture_output=True)
        with contextlib.suppress(AssertionError):
            _wait_for("the queue to empty", lambda: not subprocess.run(
                ["squeue", "-h"], env=env, capture_output=True, text=True).stdout.strip(), 60)
        for daemon in reversed(daemons):
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        logs.close()
        shutil.rmtree(folder, ignore_errors=True)


def _cli(*args, env, timeout=600, check=True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "autograder", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, f"autograder {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def gradebook_rows(grading_dir: Path) -> dict:
    """Everything the gradebook holds about each submission, read with nbgrader's API."""
    from nbgrader.api import Gradebook
    rows = {}
    with Gradebook(f"sqlite:///{grading_dir / 'gradebook.db'}", config.COURSE_ID) as gb:
        for assignment in gb.assignments:
            for sub in assignment.submissions:
                rows[(sub.student.id, assignment.name)] = dict(
                    timestamp=sub.timestamp, score=sub.score, max_score=sub.max_score,
                    notebooks={nb.name: dict(
                        flagged=nb.flagged, late_penalty=nb.late_submission_penalty,
                        grades={g.name: (g.auto_score, g.manual_score, g.extra_credit, g.needs_manual_grade,
                                         g.max_score) for g in nb.grades},
                        comments={c.name: c.auto_comment for c in nb.comments}) for nb in sub.notebooks})
    return rows


@pytest.fixture(scope="module")
def course(cluster):
    """The same two submissions in a Slurm grading folder and in a local one; the local one is
    graded in the background (one worker) while the Slurm tests use the other core."""
    from autograder import grading
    scratch = Path(tempfile.mkdtemp(prefix="course-slurm-grading-"))
    slurm_dir, local_dir, release = scratch / "slurm", scratch / "local", scratch / "release"
    with course_env(COURSE_GRADING_DIR=slurm_dir, COURSE_RELEASE_DIR=release):
        grading.release(LABS)
        for lab in LABS:
            grading.submit_samples([lab], [s for s, lab_ in SUBMISSIONS if lab_ == lab])
    # the local folder: the same gradebook (assignments), the same files and timestamps
    local_dir.mkdir()
    with sqlite3.connect(slurm_dir / "gradebook.db") as src, sqlite3.connect(local_dir / "gradebook.db") as dst:
        src.backup(dst)
    shutil.copytree(slurm_dir / "submitted", local_dir / "submitted")
    for notes in slurm_dir.glob("*.json"):  # the samples' own cell limits
        shutil.copy(notes, local_dir / notes.name)
    env = dict(cluster["env"], COURSE_RELEASE_DIR=str(release), PYTHONUNBUFFERED="1")
    local = subprocess.Popen([sys.executable, "-m", "autograder", "autograde", *LABS, "--workers", "1"],
                             cwd=ROOT, env=dict(env, COURSE_GRADING_DIR=str(local_dir)),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        yield dict(slurm=slurm_dir, local=local_dir, local_proc=local, env=dict(env, COURSE_GRADING_DIR=str(slurm_dir)))
    finally:
        if local.poll() is None:
            local.kill()
        local.communicate()
        shutil.rmtree(scratch, ignore_errors=True)


def _runs(grading_dir: Path) -> list[Path]:
    return sorted((grading_dir / "slurm").glob("run-*"))


def _read_json(path: Path):
    import json
    return json.loads(path.read_text())


def test_interrupted_array_resumes_and_the_gradebook_equals_a_local_grading(course):
    env = course["env"]
    # an array of two tasks, one at a time, interrupted once the first has its result
    start = time.monotonic()
    _cli("autograde", *LABS, "--slurm", "--gres", "gpu:1", "--array-parallel", "1", "--no-wait", env=env)
    first = _runs(course["slurm"])[-1]
    _wait_for("the first array task's result", lambda: (first / "tasks" / "00000" / "result.json").exists(), 300)
    print(f"\nfirst task done at {time.monotonic() - start:.0f} s")
    jobs = _read_json(first / "state.json")["jobs"][0]
    subprocess.run(["scancel", jobs["array"], jobs["finish"]], env=env, check=True)
    _wait_for("the cancelled jobs to leave the queue", lambda: not subprocess.run(
        ["squeue", "-h", "-j", f"{jobs['array']},{jobs['finish']}"], env=env, capture_output=True,
        text=True).stdout.strip(), 60)
    assert "not in the queue" in _cli("status", env=env).stdout

    # resume: the first task's result is merged, only the other one is graded again
    _cli("autograde", *LABS, "--slurm", "--gres", "gpu:1", "--resume", "--array-parallel", "2", env=env)
    seconds = time.monotonic() - start
    second = _runs(course["slurm"])[-1]
    assert second != first
    planned = [tuple(p) for chunk in _read_json(second / "plan.json")["tasks"] for p in chunk]
    assert planned == [tuple(p) for p in _read_json(first / "plan.json")["tasks"][1]]
    assert _read_json(first / "state.json")["merged"] == [0]
    # each task asked for a GPU and Slurm gave it the node's one
    assert "--gres=gpu:1" in _read_json(second / "plan.json")["options"]
    for run in (first, second):
        assert _read_json(run / "tasks" / "00000" / "result.json")["gpus"] == "0", run
    status = _cli("status", env=env).stdout
    assert f"{first.name}: 1/2 tasks graded, 1 merged" in status and "interrupted" in status, status
    assert f"{second.name}: 1/1 tasks graded, 1 merged, 0 retried, 0 failed [done]" in status, status

    print(f"\nslurm done at {time.monotonic() - start:.0f} s")
    out, _ = course["local_proc"].communicate(timeout=600)
    print(f"local done at {time.monotonic() - start:.0f} s")
    assert course["local_proc"].returncode == 0, out[-3000:]
    on_slurm, local = gradebook_rows(course["slurm"]), gradebook_rows(course["local"])
    assert set(local) == set(SUBMISSIONS), local.keys()
    assert on_slurm == local
    def correctness(key):  # speed cells score on a GPU only
        grades = [g for nb in on_slurm[key]["notebooks"].values() for name, g in nb["grades"].items()
                  if not name.startswith("speed_")]
        return sum(g[0] or 0 for g in grades), sum(g[4] for g in grades)
    got, most = correctness(("reference", "lab00_triton_warmup"))
    assert got == most > 0
    got, most = correctness(("buggy", "lab04_kv_cache"))
    assert 0 < got < most
    # the autograded notebooks came home too: feedback is generated from the merged folder
    for student, lab in SUBMISSIONS:
        assert (course["slurm"] / "autograded" / student / lab / f"{lab}.ipynb").exists()
    print(f"\n{len(SUBMISSIONS)} submissions through Slurm (with the interruption) in {seconds:.0f} s: "
          f"{len(SUBMISSIONS) / seconds * 60:.1f} submissions/min on {os.cpu_count()} cores")


def test_a_task_that_dies_is_retried_once_then_graded_as_failed(course):
    from autograder import samples
    env = course["env"]
    lab = "lab00_triton_warmup"
    with course_env(COURSE_GRADING_DIR=course["slurm"], COURSE_RELEASE_DIR=env["COURSE_RELEASE_DIR"]):
        from autograder import grading
        grading.submit("dies", lab, samples.make_sample(lab, "untouched"))
    before = gradebook_rows(course["slurm"])
    _cli("autograde", lab, "--slurm", "--resume", "--no-wait", env=env)  # only the new one is planned
    run = _runs(course["slurm"])[-1]
    assert _read_json(run / "plan.json")["tasks"] == [[["dies", lab]]]

    def running_task():
        out = subprocess.run(["squeue", "-h", "-n", f"grade-{run.name}", "-t", "RUNNING", "-o", "%i"],
                             env=env, capture_output=True, text=True).stdout.split()
        return out[0] if out else None
    killed = []
    for attempt in (1, 2):  # the task, then its retry, each killed while it grades
        job = _wait_for(f"attempt {attempt} to run", lambda: running_task() not in (None, *killed) and running_task(), 120)
        subprocess.run(["scancel", job], env=env, check=True)
        killed.append(job)
    _wait_for("the finish job to record the failure", lambda: _read_json(run / "state.json")["done"], 180)

    outcome = _read_json(course["slurm"] / "status.json")[f"dies/{lab}"]
    assert not outcome["ok"] and "died 2 times" in outcome["message"] and "CANCELLED" in outcome["message"], outcome
    row = gradebook_rows(course["slurm"])[("dies", lab)]
    assert row["score"] == 0 and all(nb["flagged"] for nb in row["notebooks"].values())
    assert any("CANCELLED" in (c or "") for nb in row["notebooks"].values() for c in nb["comments"].values())
    status = _cli("status", env=env).stdout
    assert f"{run.name}: 0/1 tasks graded, 0 merged, 1 retried, 1 failed [done]" in status, status
    assert "dies/lab00_triton_warmup" in status and "CANCELLED" in status, status
    after = gradebook_rows(course["slurm"])
    del after[("dies", lab)]
    assert after == before  # the other submissions' rows are untouched
