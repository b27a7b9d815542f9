"""The seam between hidden tests and the instructor's references, bound before learner code runs.

Learners never have the reference kernels or the answer-equal references: they live in
`kernels/`, which is not part of the learner install and, in the grading sandbox, is
hidden from the notebook's files. A grading kernel calls `bind()` from its kernelspec's
startup line, before the notebook's first cell: it imports the references the lab's hidden
tests use (through a directory handle the sandbox opened before hiding `kernels/`) and
snapshots them, and it makes private copies of the learner-visible check modules
(`genfast.checks`, `genfast.bench`, the lab's `genfast.labs.<lab>` helpers). A hidden test
then asks for them through one object, whose name the code policy reserves for the grader:

    ### BEGIN HIDDEN TESTS
    from autograder.grader import GRADER
    attention = GRADER.reference("kernels.attention")   # attributes as they were at bind time
    GRADER.lab.check_naive(naive_attention, reference=attention.torch_attention)  # private checks
    ### END HIDDEN TESTS

Every graded test cell ends with such a block, re-running its checks through the private
copies, so the checks that count are the grader's even if a learner's cell replaced `lab` or
`checks` in the notebook's namespace.

Whatever a learner's code rebinds or patches in the modules it can see (which the code policy
forbids anyway) changes nothing here: the snapshots and private copies were taken before it
ran. Outside a grading kernel (an instructor running a solution notebook) the same calls bind
lazily on first use.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types
from pathlib import Path

# The instructor-side modules each lab's hidden tests and speed cells compare against.
LAB_REFERENCES: dict[str, list[str]] = {
    "lab00_triton_warmup": ["kernels.vector_add", "kernels.softmax", "kernels.matmul", "kernels.block_sum_cuda"],
    "lab01_generation": ["kernels.sampling"],
    "lab02_attention": ["kernels.attention", "kernels.flash_backward"],
    "lab03_linear_attention_mamba": ["kernels.linear_attention", "kernels.selective_scan"],
    "lab04_kv_cache": ["kernels.kv_cache", "kernels.kv_press"],
    "lab05_dataset_cards": ["kernels.minhash", "kernels.curation.licenses", "kernels.curation.dedup"],
    "lab06_agents": ["kernels.similarity_topk", "kernels.agents.tools", "kernels.agents.retrieval",
                     "kernels.agents.evaluate"],
    "lab07_interpretability": ["kernels.interp.hooks", "kernels.interp.scores", "kernels.interp.lens",
                               "kernels.interp.probes", "kernels.interp.patching", "kernels.interp.steering",
                               "kernels.interp.sae", "kernels.interp.editing"],
    "lab08_serving": ["kernels.paged_attention", "kernels.paged_prefill", "kernels.paged_cache", "kernels.kv_cache"],
}
PRIVATE_MODULES = ("genfast.checks", "genfast.bench")  # shared by every lab, copied for each

_references: dict[str, "Snapshot"] = {}
_private: dict[str, types.ModuleType] = {}


class Snapshot:
    """A module's public attributes as they were when bound; read-only."""

    __slots__ = ("_name", "_attrs")

    def __init__(self, module: types.ModuleType):
        object.__setattr__(self, "_name", module.__name__)
        object.__setattr__(self, "_attrs", {k: v for k, v in vars(module).items() if not k.startswith("__")})

    def __getattr__(self, attr):
        try:
            return self._attrs[attr]
        except KeyError:
            raise AttributeError(f"{self._name} has no attribute {attr!r}") from None

    def __setattr__(self, attr, value):
        raise AttributeError(f"the grader's snapshot of {self._name} is read-only")

    def __repr__(self) -> str:
        return f"<reference {self._name}>"


def _import_references_package() -> None:
    """Make `kernels` importable from the directory handle the sandbox opened for it, if any
    (the folder itself is hidden from the kernel's file system), else import it normally."""
    fd = os.environ.get("COURSE_REFERENCE_FD")
    if fd is None or "kernels" in sys.modules:
        return
    folder = f"/proc/self/fd/{int(fd)}"
    spec = importlib.util.spec_from_file_location("kernels", f"{folder}/__init__.py",
                                                  submodule_search_locations=[folder])
    package = importlib.util.module_from_spec(spec)
    sys.modules["kernels"] = package
    spec.loader.exec_module(package)


def _private_copy(name: str) -> types.ModuleType:
    """A second, unregistered instance of a genfast module, its own globals and all; its
    references to the shared check modules point at their private copies."""
    importlib.import_module(name)  # the public module first: dataclasses look their module up by name
    spec = importlib.util.find_spec(name)
    copy = importlib.util.module_from_spec(importlib.util.spec_from_file_location(name, spec.origin))
    copy.__package__ = name.rpartition(".")[0]
    copy.__spec__.loader.exec_module(copy)
    for attr, value in list(vars(copy).items()):
        if isinstance(value, types.ModuleType) and value.__name__ in _private:
            setattr(copy, attr, _private[value.__name__])
    return copy


def reference(name: str) -> Snapshot:
    """The snapshot of an instructor-side module (bound at kernel start in a grading kernel)."""
    _check_bound()
    if name not in _references:
        _import_references_package()
        _references[name] = Snapshot(importlib.import_module(name))
    return _references[name]


def private(name: str) -> types.ModuleType:
    """The grader's private copy of a learner-visible genfast module."""
    _check_bound()
    if name not in _private:
        for shared in PRIVATE_MODULES:
            if shared not in _private and shared != name:
                _private[shared] = _private_copy(shared)
        _private[name] = _private_copy(name)
    return _private[name]


def lab_helpers(lab: str) -> str | None:
    name = f"genfast.labs.{lab}"
    return name if importlib.util.find_spec(name) is not None else None


def bind(lab: str | None = None) -> None:
    """Bind everything the lab's hidden tests use, now (a grading kernel's startup line).

    Whatever happens, the handle on the hidden references folder is closed before the first
    cell; if binding failed, every later use of GRADER says so (and those parts score 0)."""
    global _bind_error
    lab = lab or os.environ.get("COURSE_LAB") or Path.cwd().name
    os.environ["COURSE_LAB"] = lab
    os.environ["COURSE_GRADING"] = "1"  # visible speed calls stay quiet: the grader's run counts
    _profile_mark("kernel-up")
    try:
        import torch, triton  # noqa: F401  (what every lab's first cell imports; first, to be timed apart)
        _profile_mark("imports")
        _import_references_package()
        for name in PRIVATE_MODULES:
            private(name)
        if lab in LAB_REFERENCES:
            helpers = lab_helpers(lab)
            if helpers:
                private(helpers)
            for name in LAB_REFERENCES[lab]:
                reference(name)
        _profile_mark("references")
    except Exception as exc:  # noqa: BLE001  (reported by every GRADER use instead)
        _bind_error = f"{type(exc).__name__}: {exc}"
    finally:
        fd = os.environ.pop("COURSE_REFERENCE_FD", None)
        if fd is not None:  # the references are imported: close the handle to the hidden folder
            os.close(int(fd))


_bind_error = ""
PROFILE_MARK = "course-profile"
PROFILE_STAGES = ("kernel-up", "imports", "references")  # the marks bind() writes, in order


def _profile_mark(stage: str) -> None:
    """Under `python -m autograder stress` (COURSE_PROFILE=1), note on the kernel's stderr, which
    nbgrader's log keeps, when a stage of the kernel's start ended: the profile splits it by these."""
    if os.environ.get("COURSE_PROFILE") == "1":
        import time
        try:
            os.write(2, f"{PROFILE_MARK} {stage} {time.time():.3f}\n".encode())
        except OSError:  # no stderr: the profile says which marks it lacks
            pass


def _check_bound() -> None:
    if _bind_error:
        raise RuntimeError(f"the grader could not bind this lab's references at kernel start ({_bind_error}); "
                           f"tell your instructor")


class _Grader:
    """What hidden tests use: `GRADER.lab` (the lab's check helpers), `GRADER.checks`,
    `GRADER.bench` (private copies) and `GRADER.reference(name)` (snapshots)."""

    reference = staticmethod(reference)
    private = staticmethod(private)

    @property
    def checks(self):
        return private("genfast.checks")

    @property
    def bench(self):
        return private("genfast.bench")

    @property
    def lab(self):
        lab = os.environ.get("COURSE_LAB") or Path.cwd().name
        helpers = lab_helpers(lab)
        if helpers is None:
            raise RuntimeError(f"no check helpers genfast.labs.{lab} for this lab")
        return private(helpers)


GRADER = _Grader()

STARTUP = "import autograder.grader as _grader; _grader.bind(); del _grader"
KERNEL_NAME = "course-grader"  # the plain (unsandboxed) grading kernel: binds at start too


def install_kernelspec(folder: Path) -> Path:
    """Write the course-grader kernelspec under `folder`/kernels (for JUPYTER_PATH)."""
    import json
    spec = Path(folder) / "kernels" / KERNEL_NAME
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}",
                 f"--IPKernelApp.exec_lines={STARTUP}"],
        "display_name": "Python 3 (course grader)", "language": "python", "interrupt_mode": "signal",
    }, indent=1))
    return Path(folder)
