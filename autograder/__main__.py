"""python -m autograder COMMAND: the course's instructor tool.

  release   [LAB ...]              labs/ from solutions/ (nbgrader generate_assignment)
  samples   [LAB ...]              put the bundled sample submissions into grading/submitted
  autograde [LAB ...] [--from DIR] [--workers N] [--resume]
                                   autograde grading/submitted (or collect DIR/<student>/<lab>/ first)
            --slurm [--partition P --gres gpu:1 --array-parallel K]   as a Slurm job array (autograder/slurm.py)
  status                           progress of the Slurm grading runs
  feedback  [LAB ...]              feedback HTML under grading/feedback
  export    [--to CSV]             grade CSV (nbgrader export)
  gradebook                        print the student x lab table
  similarity [LAB ...] [--threshold 0.6] [--out DIR]
                                   copy-detection report over grading/submitted (flags, grades nothing)
  grade     [LAB ...] [--students reference,untouched]
                                   all of the above on the samples: what `make grade` runs
  gpu-check [--out FILE]           on a GPU machine, in under 10 minutes: kernels checked on the GPU, compile
                                   report, bench, the samples graded with speed live, speed stability
  bench                            reference kernels against the hardware limit (GPU)
  fixtures  [LAB ...]              the learner install's expected outputs, from the references
  compile-report [--csv FILE] [--write-reference]  registers, spills, shared memory, tensor-core instructions of every
                                   Triton kernel for sm_80 and sm_90, compiled ahead of time on this machine
  learner-dist [--out dist]        the learner install: a wheel of genfast alone (no answers)
  lock                             write genfast/environment.lock (the tested versions) from this environment
  stress    [--lab LAB] [-n 200] [--workers 2]   throughput and peak memory on many submissions
  build-notebook SCRIPT OUT        percent-format script -> nbgrader source notebook
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from genfast import runtime

from . import config, gradebook, grading, slurm


def _labs(names: list[str]) -> list[str]:
    known = grading.all_labs()
    unknown = [n for n in names if n not in known]
    if unknown:
        sys.exit(f"unknown lab(s) {unknown}; the labs are {known}")
    return names or known


def _report(outcomes) -> None:
    for o in sorted(outcomes, key=lambda o: (o.student, o.lab)):
        if o.message or not o.ok:
            print(f"  {'!' if not o.ok else '-'} {o.student}/{o.lab}: {o.message}")


def cmd_grade(labs: list[str], students: list[str] | None = None) -> None:
    start = time.time()
    print(runtime.describe())
    grading.release(labs)
    pairs = grading.submit_samples(labs, students)
    graded_at = time.time()
    _report(grading.autograde(pairs, workers=2))
    feedback_at = time.time()
    seconds = feedback_at - graded_at
    print(f"autograded {len(pairs)} submissions in {seconds:.0f} s with 2 workers "
          f"({seconds / max(1, len(pairs)):.1f} s of wall time per submission)")
    grading.feedback(labs)
    csv = grading.export(config.grading_dir() / "grades.csv")
    print("\n" + gradebook.table() + "\n")
    print(f"feedback: {config.grading_dir() / 'feedback'}/<student>/<lab>/<lab>.html")
    print(f"grades:   {csv}")
    print(f"done in {time.time() - start:.0f} s (release and samples {graded_at - start:.0f} s, grading "
          f"{seconds:.0f} s, feedback, CSV and table {time.time() - feedback_at:.0f} s)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m autograder", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("release", "samples", "feedback"):
        sub.add_parser(name).add_argument("labs", nargs="*")
    p = sub.add_parser("grade")
    p.add_argument("labs", nargs="*")
    p.add_argument("--students", default=None, help="comma-separated sample names (default: all of them)")
    p = sub.add_parser("gpu-check")
    p.add_argument("--out", type=Path, default=None)
    p = sub.add_parser("autograde")
    p.add_argument("labs", nargs="*")
    p.add_argument("--from", dest="source", type=Path, help="folder of <student>/<lab>/<lab>.ipynb")
    p.add_argument("--workers", type=int, default=1, help="submissions graded at once")
    p.add_argument("--resume", action="store_true", help="skip submissions already graded")
    slurm.add_arguments(p)
    sub.add_parser("status", help="progress of the Slurm grading runs")
    sub.add_parser("export").add_argument("--to", type=Path, default=None)
    sub.add_parser("gradebook")
    p = sub.add_parser("similarity")
    p.add_argument("labs", nargs="*")
    p.add_argument("--threshold", type=float, default=0.6, help="flag pairs at least this similar")
    p.add_argument("--out", type=Path, default=None, help="report folder (default grading/similarity)")
    sub.add_parser("bench")
    sub.add_parser("fixtures").add_argument("labs", nargs="*")
    p = sub.add_parser("compile-report")
    p.add_argument("--csv", default=None)
    p.add_argument("--only", default=None, help="only kernels whose name contains this")
    p.add_argument("--write-reference", action="store_true",
                   help="also write the reference figures genfast ships (genfast/fixtures/compile_reference.json)")
    sub.add_parser("learner-dist").add_argument("--out", type=Path, default=config.ROOT / "dist")
    sub.add_parser("lock")
    p = sub.add_parser("stress")
    p.add_argument("--lab", default="lab00_triton_warmup")
    p.add_argument("-n", type=int, default=200)
    p.add_argument("--workers", type=int, default=2)
    p = sub.add_parser("build-notebook")
    p.add_argument("script")
    p.add_argument("out")
    args = parser.parse_args(argv)

    if args.command == "release":
        grading.release(_labs(args.labs))
    elif args.command == "samples":
        for student, lab in grading.submit_samples(_labs(args.labs)):
            print(f"submitted {student}/{lab}")
    elif args.command == "autograde":
        labs = _labs(args.labs)
        if args.source:
            pairs = grading.submit_folder(args.source, labs)
        else:
            root = config.grading_dir() / "submitted"
            pairs = [(s.name, lab) for s in sorted(root.iterdir()) for lab in labs if (s / lab).is_dir()]
        if args.slurm:
            _report(slurm.autograde(pairs, args))
        else:
            _report(grading.autograde(pairs, workers=args.workers, resume=args.resume))
    elif args.command == "status":
        print(slurm.status())
    elif args.command == "feedback":
        grading.feedback(_labs(args.labs))
    elif args.command == "export":
        print(grading.export(args.to or config.grading_dir() / "grades.csv"))
    elif args.command == "gradebook":
        print(gradebook.table())
    elif args.command == "similarity":
        from . import similarity
        similarity.main(_labs(args.labs), args.threshold, args.out)
    elif args.command == "grade":
        cmd_grade(_labs(args.labs), args.students.split(",") if args.students else None)
    elif args.command == "gpu-check":
        from . import gpu_check
        sys.exit(gpu_check.run(args.out))
    elif args.command == "bench":
        from kernels import benchmarks
        benchmarks.main()
    elif args.command == "compile-report":
        from . import compile_report
        sys.exit(compile_report.main(args.csv, args.only, args.write_reference))
    elif args.command == "lock":
        from . import lock
        print(f"wrote {lock.write()}")
    elif args.command == "learner-dist":
        from . import learner
        print(learner.build_wheel(args.out))
    elif args.command == "fixtures":
        from kernels import fixtures
        for lab in args.labs or fixtures.labs():
            print(f"wrote {fixtures.write(lab)}")
    elif args.command == "stress":
        from . import stress
        stress.run(args.lab, args.n, args.workers)
    elif args.command == "build-notebook":
        from . import nbbuild
        nbbuild.main([args.script, args.out])


if __name__ == "__main__":
    main()
