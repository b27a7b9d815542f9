"""Grade many synthetic submissions of one lab and report throughput and peak memory.

    python -m autograder stress --lab lab00_triton_warmup -n 200 --workers 2

First it grades one reference submission alone, makes its feedback page, and prints where
its seconds go, wall and CPU time per stage (from nbgrader's timestamped log, the marks the
grading kernel writes while it starts, the notebook's cell timings and a sampler of the CPU
time of every process it starts): what grading costs beyond the submission's own cells. It
does so three times (`--profile-runs`) and prints the medians: one run moves by a second.

The submissions cycle through the lab's samples, one in twenty an endless loop (`hangs`,
which waits out the cell timeout) and the rest reference, untouched and buggy notebooks:
roughly the mix of finished, unfinished and wrong work a real class sends. It runs in
its own grading folder (grading/stress unless COURSE_GRADING_DIR is set) and prints
submissions per minute, the peak memory the machine used during the batch, and whether
every submission got a grade.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import threading
import time

import nbformat

from . import config, gradebook, grader, grading, nbrunner, samples


def _used_memory_bytes() -> int:
    info = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, value = line.split(":", 1)
            info[key] = int(value.split()[0]) * 1024
    return info["MemTotal"] - info["MemAvailable"]


class Sampler:
    """Calls `sample()` every `interval` seconds in a background thread while in a `with` block
    (once at the start and once at the end too)."""

    interval = 0.2

    def __init__(self):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        raise NotImplementedError

    def _run(self):
        self.sample()
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.sample()


class PeakMemory(Sampler):
    """The machine's peak used memory during the block."""

    def __init__(self):
        super().__init__()
        self.baseline = self.peak = _used_memory_bytes()

    def sample(self):
        self.peak = max(self.peak, _used_memory_bytes())


def _tree_cpu_seconds(root: int) -> float:
    """CPU time of `root`'s descendants, alive or reaped by one of them (utime + stime + the
    children's times in /proc/PID/stat)."""
    parents, cpu = {}, {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rpartition(")")[2].split()
            except OSError:
                continue
            parents[int(entry)] = int(fields[1])
            cpu[int(entry)] = sum(int(x) for x in fields[11:15])
    total, frontier = 0, [root]
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    while frontier:
        pid = frontier.pop()
        for child in children.get(pid, []):
            total += cpu[child]
            frontier.append(child)
    return total / os.sysconf("SC_CLK_TCK")


class CpuSampler(Sampler):
    """The CPU time of this process's descendants every 20 ms, as (wall time, CPU s) pairs."""

    interval = 0.02

    def __init__(self):
        super().__init__()
        self.samples: list[tuple[float, float]] = []

    def sample(self):
        self.samples.append((time.time(), _tree_cpu_seconds(os.getpid())))

    def at(self, when: float) -> float:
        earlier = [cpu for t, cpu in self.samples if t <= when]
        return earlier[-1] if earlier else 0.0


def _log_times(log_text: str) -> dict[str, float]:
    """Wall-clock times of the stage boundaries in a timestamped nbgrader autograde log: nbgrader's
    own lines, and the marks the grading kernel writes while it starts (grader._profile_mark)."""
    marks = {"up": "Loaded config file", "kernel": "Starting kernel", "first": "Executing cell",
             "written": "Setting destination file permissions"}
    times = {}
    for line in log_text.splitlines():
        if line.startswith(grader.PROFILE_MARK + " "):
            _, name, stamp = line.split()
            times.setdefault(name, float(stamp))
        for name, text in marks.items():
            if name not in times and text in line:
                stamp = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S.%f")
                times[name] = stamp.timestamp()
    missing = (set(marks) | set(grader.PROFILE_STAGES)) - set(times)
    if missing:
        raise RuntimeError(f"the profiled nbgrader log lacks {sorted(missing)}")
    return times


def _cell_times(notebook) -> tuple[float, float]:
    """(the cells' own run time in seconds, when the last one replied) from the notebook's metadata."""
    total, last = 0.0, 0.0
    for cell in notebook.cells:
        run = cell.get("metadata", {}).get("execution", {})
        if "iopub.execute_input" in run and "shell.execute_reply" in run:
            start, end = (datetime.datetime.fromisoformat(run[k].replace("Z", "+00:00")).timestamp()
                          for k in ("iopub.execute_input", "shell.execute_reply"))
            total, last = total + end - start, max(last, end)
    return total, last


IMPORTS_STAGE = "import torch and triton (every lab's first cell does; the kernel does it first)"


def profile_one(lab: str, student: str = "reference") -> dict:
    """Grade one submission alone, then make its feedback page, and split the wall and CPU time
    into stages."""
    grading.submit(student, lab, samples.make_sample(lab, student))
    nbrunner.run(["--version"], env=dict(os.environ), cwd=config.ROOT)  # a warm fork server, as in a batch
    os.environ["COURSE_PROFILE"] = "1"
    feedback_log = config.grading_dir() / "logs" / f"feedback-{student}-{lab}.log"
    try:
        with CpuSampler() as cpu:
            start = time.time()
            outcome = grading.autograde_one(student, lab, threads=os.cpu_count())
            graded = time.time()
            grading.nbgrader("generate_feedback", lab, "--student", student, "--force", log=feedback_log)
            end = time.time()
    finally:
        os.environ.pop("COURSE_PROFILE")
    log = config.grading_dir() / "logs" / f"autograde-{student}-{lab}.log"
    t = _log_times(log.read_text())
    notebook = nbformat.read(config.grading_dir() / "autograded" / student / lab / f"{lab}.ipynb", as_version=4)
    cells, last_reply = _cell_times(notebook)
    bounds = [("start nbgrader (a fork of the preloaded server)", start, t["up"]),
              ("nbgrader before the kernel (gradebook, checksums, copies)", t["up"], t["kernel"]),
              ("kernel start: sandbox, Python, ipykernel", t["kernel"], t["kernel-up"]),
              (IMPORTS_STAGE, t["kernel-up"], t["imports"]),
              ("kernel start: the lab's references, private check copies", t["imports"], t["references"]),
              ("kernel ready, nbgrader connected, first cell sent", t["references"], t["first"]),
              ("the notebook's cells, and nbgrader between them", t["first"], last_reply),
              ("after the last cell (kernel stopped, grades saved)", last_reply, t["written"]),
              ("exit, clean-up, status", t["written"], graded),
              ("the feedback page (nbgrader generate_feedback)", graded, end)]
    # a killed kernel's CPU time leaves the process tree with it: a stage never counts below 0
    stages = [dict(stage=name, wall=b - a, cpu=max(0.0, cpu.at(b) - cpu.at(a))) for name, a, b in bounds]
    return dict(lab=lab, student=student, ok=outcome.ok, wall=end - start, cpu=sum(s["cpu"] for s in stages),
                cells=cells, beyond_cells=(end - start) - cells, stages=stages)


def median_profile(profiles: list[dict]) -> dict:
    """Each figure's median over several profiles of the same submission (one run moves by a
    second from one to the next on a shared machine)."""
    from statistics import median
    first = profiles[0]
    stages = [dict(stage=s["stage"], wall=median(p["stages"][i]["wall"] for p in profiles),
                   cpu=median(p["stages"][i]["cpu"] for p in profiles)) for i, s in enumerate(first["stages"])]
    return dict(first, ok=all(p["ok"] for p in profiles), runs=len(profiles), stages=stages,
                **{k: median(p[k] for p in profiles) for k in ("wall", "cpu", "cells", "beyond_cells")})


def print_profile(p: dict) -> None:
    runs = p.get("runs", 1)
    print(f"one submission, graded alone ({p['lab']}/{p['student']}): where the seconds go"
          + (f" (the median of {runs} runs)" if runs > 1 else ""))
    print(f"  {'stage':82s} {'wall s':>7s} {'CPU s':>7s}")
    for s in p["stages"]:
        print(f"  {s['stage']:82s} {s['wall']:7.2f} {s['cpu']:7.2f}")
    print(f"  {'total':82s} {p['wall']:7.2f} {p['cpu']:7.2f}")
    imports = next(s["wall"] for s in p["stages"] if s["stage"] == IMPORTS_STAGE)
    print(f"  the cells' own run time (the notebook's metadata): {p['cells']:.2f} s; beyond the cells: "
          f"{p['beyond_cells']:.2f} s, of which {imports:.2f} s is importing torch and triton and "
          f"{p['beyond_cells'] - imports:.2f} s the grading machinery (target: at most 3 s)")


def run(lab: str, n: int, workers: int, profile_runs: int = 3) -> dict:
    os.environ.setdefault("COURSE_GRADING_DIR", str(config.ROOT / "grading" / "stress"))
    grading.release([lab])
    if profile_runs:
        print_profile(median_profile([profile_one(lab) for _ in range(profile_runs)]))
    honest = [k for k in samples.students_for(lab) if k != "hangs"]
    pairs = []
    for i in range(n):
        kind = "hangs" if i % 20 == 19 else honest[i % len(honest)]
        student = f"s{i:03d}-{kind}"
        grading.submit(student, lab, samples.make_sample(lab, kind))
        pairs.append((student, lab))
    start = time.time()
    with PeakMemory() as memory:
        outcomes = grading.autograde(pairs, workers=workers)
    minutes = (time.time() - start) / 60
    scores = gradebook.scores()
    wrong = [s for s, _ in pairs if s.endswith("reference") and
             scores[(s, lab)].correctness != scores[(s, lab)].correctness_max]
    report = dict(lab=lab, submissions=n, workers=workers, minutes=round(minutes, 2),
                  per_minute=round(n / minutes, 2), peak_memory_gib=round((memory.peak - memory.baseline) / 2**30, 2),
                  graded=sum(o.ok for o in outcomes), reference_not_full=len(wrong))
    print(" ".join(f"{k}={v}" for k, v in report.items()))
    return report


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m autograder stress", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lab", default="lab00_triton_warmup")
    parser.add_argument("-n", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--profile-runs", type=int, default=3,
                        help="profile the lone submission this many times and print the medians (0: none)")
    args = parser.parse_args(argv)
    run(args.lab, args.n, args.workers, args.profile_runs)


if __name__ == "__main__":
    main()
