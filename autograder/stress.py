"""Grade many synthetic submissions of one lab and report throughput and peak memory.

    python -m autograder stress --lab lab00_triton_warmup -n 200 --workers 2

The submissions cycle through the lab's samples, one in twenty an endless loop (`hangs`,
which waits out the cell timeout) and the rest reference, untouched and buggy notebooks:
roughly the mix of finished, unfinished and wrong work a real class sends. It runs in
its own grading folder (grading/stress unless COURSE_GRADING_DIR is set) and prints
submissions per minute, the peak memory the machine used during the batch, and whether
every submission got a grade.
"""
from __future__ import annotations

import argparse
import os
import threading
import time

from . import config, gradebook, grading, samples


def _used_memory_bytes() -> int:
    info = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, value = line.split(":", 1)
            info[key] = int(value.split()[0]) * 1024
    return info["MemTotal"] - info["MemAvailable"]


class PeakMemory:
    """Samples the machine's used memory every 0.2 s in a background thread."""

    def __init__(self):
        self.baseline = self.peak = _used_memory_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, _used_memory_bytes())

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def run(lab: str, n: int, workers: int) -> dict:
    os.environ.setdefault("COURSE_GRADING_DIR", str(config.ROOT / "grading" / "stress"))
    grading.release([lab])
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
    args = parser.parse_args(argv)
    run(args.lab, args.n, args.workers)


if __name__ == "__main__":
    main()
