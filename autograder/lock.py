"""`python -m autograder lock`: write genfast/environment.lock from this environment.

The lock is the exact version of every package installed where the test suite passed (`pip
freeze`, without the course itself; torch without its build tag, since the Makefile chooses a CPU
or CUDA build of the same release, and `make setup` leaves torch out of the constraints so that
TORCH=... can choose another). `make setup` installs with it as pip constraints; the first cell of every
lab compares a learner's environment with it (genfast/environment.py). Refresh it after changing
a dependency: `make lock`, run the tests, commit the lock.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from genfast import environment

SKIP = ("llm-systems-course", "genfast")


def freeze(python: str = sys.executable) -> list[str]:
    out = subprocess.run([python, "-m", "pip", "freeze", "--exclude-editable"], capture_output=True, text=True,
                         check=True).stdout
    lines = []
    for line in out.splitlines():
        name = line.split("==")[0].strip().lower().replace("_", "-")
        if "==" in line and not line.startswith("-") and name not in SKIP:
            lines.append(line.strip().split("+")[0])  # torch 2.13.0+cpu -> 2.13.0 (any build)
    return sorted(lines, key=str.lower)


def write(path: Path = environment.LOCK) -> Path:
    import platform
    header = [f"# the versions the course's tests passed with (Python {platform.python_version()}, "
              f"{platform.system()} {platform.machine()}); written by `python -m autograder lock`,",
              "# used as pip constraints by `make setup`, compared with a learner's by genfast.environment.check()"]
    path.write_text("\n".join(header + freeze()) + "\n")
    return path


if __name__ == "__main__":
    print(f"wrote {write()}")
