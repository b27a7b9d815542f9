"""The learner install: a wheel of `genfast` alone, and an environment to do the labs in.

What a student's laptop or a JupyterHub image installs is `genfast` (checks, runtime,
benchmark helper, code policy, lab check helpers, fixtures, the course's models,
checkpoints and environments) and the released `labs/`. It never holds `kernels/` (the
reference kernels and answer-equal references), `autograder/` or `solutions/`:

    python -m autograder learner-dist [--out dist]      # dist/genfast-<version>-py3-none-any.whl
    make learner-env                                    # .learner-venv with that wheel and its dependencies

An instructor hands out the wheel (or bakes it into the hub image, with `labs/`); someone who
clones the whole repository for self-study has the solutions too, which is fine.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

from . import config

PACKAGE = "genfast"
# The instructor's dependencies that a learner does not need to do the labs.
INSTRUCTOR_ONLY = ("nbgrader", "pytest")


def version() -> str:
    return tomllib.loads((config.ROOT / "pyproject.toml").read_text())["project"]["version"]


def dependencies() -> list[str]:
    deps = tomllib.loads((config.ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return [d for d in deps if not d.startswith(INSTRUCTOR_ONLY)]


def _pyproject() -> str:
    deps = ",\n".join(f'    "{d}"' for d in dependencies())
    return f'''[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "{PACKAGE}"
version = "{version()}"
description = "The learner's package of the course 'How LLMs generate text, and how to make that fast'."
requires-python = ">=3.10"
dependencies = [
{deps},
]

[tool.setuptools.packages.find]
include = ["{PACKAGE}*"]

[tool.setuptools.package-data]
"*" = ["*.pt", "*.json", "*.txt", "*.toml", "*.lock"]
'''


def build_wheel(out: Path) -> Path:
    """Build the learner wheel from genfast/ alone (nothing else of the repository is copied)."""
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(config.ROOT / PACKAGE, Path(tmp) / PACKAGE,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        (Path(tmp) / "pyproject.toml").write_text(_pyproject())
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(out), tmp], check=True)
    return next(out.glob(f"{PACKAGE}-{version()}-*.whl"))


def wheel_files(wheel: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(wheel) as zf:
        return {name: zf.read(name) for name in zf.namelist()}
