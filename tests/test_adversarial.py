"""Hostile and broken submissions, graded in one batch with two honest ones.

Each case is a submission of lab00 that does something a real class eventually sends: an
endless loop, a memory or fork bomb, reading the solutions or other students' work, writing
outside its folder, opening a connection, killing its kernel, patching the checks, editing
the graded cells, a file that is not a notebook at all, and the cheats that try to earn points
without the work (delegating to the reference kernel by import, attribute or computed name,
rebinding or replacing the checks, patching torch, walking gc or frames, reading the hidden
tests' source). For every case: it gets a grade and a message, it earns at most what its honest
parts earn, nothing outside its sandbox changes, and the honest submissions in the same batch
are graded correctly. Most hostile code is stopped by the code policy before it runs; what the
sandbox does with code that does run is tested in tests/test_sandbox.py.
"""
from __future__ import annotations

import copy
import hashlib
import os
import socket
import threading
from pathlib import Path

import nbformat
import pytest

from autograder import config, gradebook, grading, samples, sandbox

LAB = "lab00_triton_warmup"
FULL = 12  # lab00's correctness points
ROOT = config.ROOT

pytestmark = pytest.mark.skipif(not sandbox.available(), reason="the sandbox needs root and util-linux namespaces")


class Listener:
    """A TCP server on loopback that counts connections (there must be none)."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while self.running:
            try:
                conn, _ = self.sock.accept()
                self.connections += 1
                conn.close()
            except OSError:
                pass

    def close(self):
        self.running = False
        self.thread.join(timeout=2)
        self.sock.close()


def _with_code(nb, code: str, cell_id: str = "add_kernel"):
    """Put `code` at the top of a learner-editable solution cell."""
    nb = copy.deepcopy(nb)
    cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == cell_id)
    cell.source = code + "\n" + cell.source
    return nb


def _replace_kernel(nb, cell_id: str, body: str, extra: str = "", after: str = ""):
    """`nb` with the body of the kernel in `cell_id` replaced (its given launcher kept), `extra`
    code above it and `after` code below the launcher."""
    nb = copy.deepcopy(nb)
    cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == cell_id)
    head, _, rest = cell.source.partition('"""\n')           # signature and docstring
    launcher = rest[rest.index("\n\ndef "):]                # the given launcher after the kernel
    doc_end = head + '"""\n'
    cell.source = extra + "\n" + doc_end + body + launcher + "\n" + after
    return nb


ZERO_ADD = ("    pid = tl.program_id(0)\n    offs = pid * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)\n"
            "    tl.store(out_ptr + offs, tl.zeros([BLOCK_SIZE], tl.float32), mask=offs < n_elements)\n")
HONEST_ADD_BODY = ("    pid = tl.program_id(0)\n    offs = pid * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)\n"
                   "    m = offs < n_elements\n"
                   "    tl.store(out_ptr + offs, tl.load(x_ptr + offs, mask=m) + tl.load(y_ptr + offs, mask=m), mask=m)\n")


def _delegating(reference):
    """Every kernel cell replaced by an import of the instructor's reference kernel (the attack
    that scored 12 / 12 before the learner install lost `kernels`); the roofline stays honest."""
    nb = copy.deepcopy(reference)
    imports = {"add_kernel": "from kernels.vector_add import add_kernel",
               "softmax_kernel": "from kernels.softmax import softmax_kernel",
               "matmul_kernel": "from kernels.matmul import matmul_kernel",
               "block_sum_kernel": "from kernels.block_sum_cuda import THREADS, block_sum_kernel"}
    for cell in nb.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if gid in imports:
            launcher = cell.source[cell.source.index("\n\ndef "):] if "\n\ndef " in cell.source else ""
            cell.source = imports[gid] + "\n" + launcher
    return nb


def _graded_cells(nb):
    return [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]


def build_cases(port: int) -> dict:
    """case name -> (what to write in the lab folder, expected correctness score or None, text in the feedback)."""
    released = grading.released_notebook(LAB)
    reference = samples.make_sample(LAB, "reference")
    solution = str(ROOT / "solutions" / LAB / f"{LAB}.ipynb")
    grading_dir = str(config.grading_dir())

    edited = copy.deepcopy(released)
    for cell in _graded_cells(edited):
        cell.source = "pass  # every test passes!"
    deleted = copy.deepcopy(released)
    deleted.cells = [c for c in deleted.cells if not c.metadata.get("nbgrader", {}).get("grade")]
    reordered = copy.deepcopy(reference)
    tests = _graded_cells(reordered)
    reordered.cells = tests + [c for c in reordered.cells if c not in tests]
    points = copy.deepcopy(released)
    for cell in _graded_cells(points):
        cell.metadata.nbgrader["points"] = 100
    renamed_kernel = copy.deepcopy(reference)
    renamed_kernel.metadata.kernelspec.name = "evil-kernel"
    missing_module = copy.deepcopy(reference)
    missing_module.cells.insert(2, nbformat.v4.new_code_cell("import genfast.module_that_does_not_exist"))
    huge = copy.deepcopy(reference)
    huge.cells[0].source += "\n<!-- " + "x" * (25 * 2**20) + " -->"

    add_points = 2  # test_add: what a cheating add_kernel cell may lose, and all it may lose
    cheat = lambda extra, body=ZERO_ADD, after="": _replace_kernel(reference, "add_kernel", body, extra, after)
    return {
        # -- cheats that try to earn points without the work (each keeps only its honest parts) --
        "delegates_to_reference": (_delegating(reference), 2, "code policy"),
        "delegates_by_attribute": (cheat("", after="add = lambda x, y: torch.sys.modules['kernels.vector_add'].add(x, y)"),
                                   FULL - add_points, "code policy"),
        "delegates_by_dynamic_import": (cheat("ref = __import__('ker' + 'nels.vector_add', fromlist=['add'])"),
                                        FULL - add_points, "code policy"),
        "delegates_by_importlib": (cheat("import importlib\nref = importlib.import_module('kernels.' + 'vector_add')"),
                                   FULL - add_points, "code policy"),
        "rebinds_check": (cheat("lab.check_add = lambda *a, **k: None"), FULL - add_points, "code policy"),
        "replaces_lab_helpers": (cheat("class lab:\n    check_add = staticmethod(lambda *a, **k: None)\n"
                                       "    check_softmax = check_matmul = check_roofline = check_block_sum = check_add"),
                                 FULL - add_points, "code policy"),
        # a mutation the policy does not see: the visible check is fooled, the grader's private one is not
        "loosens_tolerances": (cheat("checks.TOLERANCES.update({torch.float32: (1e9, 1e9)})"),
                               FULL - add_points, "values are wrong"),
        "patches_torch": (cheat("torch.Tensor.sub = lambda a, b: torch.zeros_like(a)"), FULL - add_points,
                          "code policy"),
        "walks_gc": (cheat("import gc\nrefs = [o for o in gc.get_objects() if type(o).__name__ == 'Snapshot']"),
                     FULL - add_points, "code policy"),
        "walks_frames": (cheat("", after="def add(x, y):\n    import sys\n"
                               "    return sys._getframe(1).f_globals['GRADER'].reference('kernels.vector_add').add(x, y)"),
                         FULL - add_points, "code policy"),
        "reads_hidden_test_source": (cheat("", HONEST_ADD_BODY, after="_add = add\n"
                                           "def add(x, y):\n    print(In[-1])\n    return _add(x, y)"),
                                     FULL - add_points, "code policy"),
        "reads_reference_file": (cheat(f"print(open({str(ROOT / 'kernels' / 'vector_add.py')!r}).read())"),
                                 FULL - add_points, "code policy"),
        "uses_grader_object": (cheat("from autograder.grader import GRADER as G\nadd_ref = G.reference('kernels.vector_add').add"),
                               FULL - add_points, "code policy"),
        # -- the honest submissions and broken input --
        "reference": (reference, FULL, "CPU only"),
        "untouched": (released, 0, "not implemented yet"),
        "loops_forever": (_with_code(released, "while True:\n    pass"), 0, "CellTimeoutError"),
        "memory_hog": (_with_code(released, "hog = []\nwhile True:\n    hog.append(bytearray(2**30))"), 0, "MemoryError"),
        "fork_bomb": (_with_code(released, "import os, time\nfor _ in range(100_000):\n    if os.fork() == 0:\n"
                                           "        time.sleep(600)"), 0, "code policy"),
        "writes_outside": (_with_code(released, f"open({str(ROOT / 'README.md')!r}, 'a').write('pwned')"), 0,
                           "code policy"),
        "deletes_outside": (_with_code(released, f"import shutil\nshutil.rmtree({str(ROOT / 'kernels')!r})"), 0,
                            "code policy"),
        "reads_solutions": (_with_code(released, f"exec(open({solution!r}).read())"), 0, "code policy"),
        "reads_hidden_tests": (_with_code(released, f"open({grading_dir + '/gradebook.db'!r}, 'rb').read()"), 0,
                               "code policy"),
        "reads_other_submissions": (_with_code(
            released, f"import glob\nfound = glob.glob({grading_dir + '/submitted/*/*/*.ipynb'!r})\n"
                      f"assert found, 'no other submissions visible'"), 0, "code policy"),
        "opens_network": (_with_code(released, f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=3)"),
                          0, "code policy"),
        "exits_kernel": (_with_code(released, "import os\nos._exit(0)"), 0, "code policy"),
        "kills_kernel": (_with_code(released, "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"), 0,
                         "code policy"),
        "redefines_assert": (_with_code(released, "import builtins\nbuiltins.AssertionError = type('Never', (Exception,), {})"),
                             0, "code policy"),
        "redefines_allclose": (_with_code(released, "torch.allclose = lambda *a, **k: True"), 0, "code policy"),
        "patches_checks": (_with_code(released, "checks.check_function = lambda *a, **k: None"), 0,
                           "code policy"),
        "patches_with_setattr": (_with_code(released, "setattr(checks, 'compare', lambda *a, **k: 0.0)"), 0,
                                 "code policy"),
        "replaces_module": (_with_code(released, "import sys, types\nsys.modules['genfast.checks'] = types.SimpleNamespace()"),
                            0, "code policy"),
        "edits_test_cells": (edited, 0, "not implemented yet"),
        "deletes_test_cells": (deleted, 0, None),
        "reorders_cells": (reordered, None, None),  # graded, and never above the honest score
        "changes_points": (points, 0, None),
        "invalid_json": ('{"cells": [', 0, "not valid JSON"),
        "nbformat_v3": (nbformat.writes(nbformat.convert(reference, 3)), FULL, "CPU only"),
        "empty_file": ("", 0, "is empty"),
        "very_large": (huge, 0, "over the 20 MB limit"),
        "wrong_file_name": (("my_lab00.ipynb", reference), FULL, "graded as"),
        "prints_megabytes": (_with_code(released, "print('x' * 10_000_000)"), 0, None),
        "other_kernel_name": (renamed_kernel, FULL, "CPU only"),
        "missing_module": (missing_module, FULL, "ModuleNotFoundError"),
        "no_notebook": (("notes.txt", "I forgot"), 0, "no notebook was submitted"),
    }


def _write(folder: Path, content) -> None:
    folder.mkdir(parents=True)
    name = f"{LAB}.ipynb"
    if isinstance(content, tuple):
        name, content = content
    if isinstance(content, nbformat.NotebookNode):
        content = nbformat.writes(content)
    (folder / name).write_text(content)


def _tree_digest(*folders: Path) -> str:
    """A hash of every file's path and bytes under `folders` (what the batch must not change)."""
    digest = hashlib.sha256()
    for folder in folders:
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
            digest.update(str(path).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    scratch = tmp_path_factory.mktemp("adversarial")
    saved = {k: os.environ.get(k) for k in ("COURSE_GRADING_DIR", "COURSE_RELEASE_DIR", "COURSE_CELL_TIMEOUT")}
    os.environ.update(COURSE_GRADING_DIR=str(scratch / "grading"), COURSE_RELEASE_DIR=str(scratch / "release"),
                      COURSE_CELL_TIMEOUT="20")  # lab00's slowest cell takes a few seconds
    listener = Listener()
    try:
        grading.release([LAB])
        cases = build_cases(listener.port)
        for name, (content, _, _) in cases.items():
            _write(scratch / "submissions" / name / LAB, content)
        protected = [ROOT / d for d in ("autograder", "kernels", "solutions", "labs", "course", "tests")]
        before = _tree_digest(*protected, ROOT / "README.md")
        pairs = grading.submit_folder(scratch / "submissions", [LAB])
        submitted = config.grading_dir() / "submitted"
        submitted_before = {p.name: _tree_digest(p) for p in submitted.iterdir()}
        outcomes = {o.student: o for o in grading.autograde(pairs, workers=2)}
        grading.feedback([LAB])
        yield dict(cases=cases, outcomes=outcomes, scores=gradebook.scores(), listener=listener,
                   unchanged=before == _tree_digest(*protected, ROOT / "README.md"),
                   # a submission nbgrader could not grade is replaced by the unfilled lab: only its own
                   submitted_changed={p.name for p in submitted.iterdir() if _tree_digest(p) != submitted_before[p.name]},
                   pairs=pairs)
    finally:
        listener.close()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


CHEATS = [
    "delegates_to_reference", "delegates_by_attribute", "delegates_by_dynamic_import", "delegates_by_importlib",
    "rebinds_check", "replaces_lab_helpers", "loosens_tolerances", "patches_torch", "walks_gc", "walks_frames",
    "reads_hidden_test_source", "reads_reference_file", "uses_grader_object"]
CASE_NAMES = CHEATS + [
    "reference", "untouched", "loops_forever", "memory_hog", "fork_bomb", "writes_outside", "deletes_outside",
    "reads_solutions", "reads_hidden_tests", "reads_other_submissions", "opens_network", "exits_kernel",
    "kills_kernel", "redefines_assert", "redefines_allclose", "patches_checks", "patches_with_setattr",
    "replaces_module", "edits_test_cells", "deletes_test_cells", "reorders_cells", "changes_points",
    "invalid_json", "nbformat_v3", "empty_file", "very_large", "wrong_file_name", "prints_megabytes",
    "other_kernel_name", "missing_module", "no_notebook"]


@pytest.mark.parametrize("name", CASE_NAMES)
def test_case_gets_a_grade_and_a_message(batch, name):
    _, expected, message = batch["cases"][name]
    outcome = batch["outcomes"][name]
    assert outcome.ok, outcome
    score = batch["scores"][(name, LAB)]
    assert score.correctness_max == FULL, f"{name}: the points of a lab come from the release, not the submission"
    if expected is not None:
        assert score.correctness == expected, (name, score)
    else:
        assert score.correctness <= FULL
    assert score.speed == 0
    html = (config.grading_dir() / "feedback" / name / LAB / f"{LAB}.html").read_text()
    if message:  # one text, or a tuple of acceptable ones
        alternatives = message if isinstance(message, tuple) else (message,)
        assert any(m in html or m in outcome.message for m in alternatives), \
            f"{name}: feedback does not say {message!r}"
    assert len(html) < 10 * 2**20, "feedback stays readable"


def test_nothing_outside_the_sandbox_changed(batch):
    assert batch["unchanged"], "a submission changed files of the course"
    replaced = {name for name, o in batch["outcomes"].items() if "could not be graded" in o.message}
    assert batch["submitted_changed"] <= replaced, f"submissions changed: {batch['submitted_changed'] - replaced}"
    assert batch["listener"].connections == 0, "a submission reached a server on loopback"
    assert (ROOT / "kernels" / "softmax.py").exists() and "pwned" not in (ROOT / "README.md").read_text()


def test_no_sandboxed_kernel_outlives_the_batch(batch):
    left = sandbox.leftover_processes(sandbox.own_runtimes())  # this test process's (other tests may run alongside)
    assert not left, f"sandbox processes still alive after the batch: {left}"


def test_grading_twice_gives_the_same_result_and_resume_skips_done_work(batch):
    first = batch["scores"][("reference", LAB)].correctness
    again = grading.autograde([("reference", LAB)], resume=False)
    assert again[0].ok and gradebook.scores()[("reference", LAB)].correctness == first
    resumed = grading.autograde(batch["pairs"], resume=True)
    assert len(resumed) == len(batch["pairs"])
    assert all(o.seconds == batch["outcomes"][o.student].seconds or o.student == "reference" for o in resumed), \
        "resume must not grade finished submissions again"
