"""What the sandbox does with hostile code that runs (the code policy stops most of it earlier).

One sandboxed kernel, started the way grading starts it, runs each snippet of the hostile
batch directly: it may not write or delete course files, read the solutions, the reference
kernels, the gradebook or other submissions, import a reference the grader did not bind,
reach a server on loopback, or take more memory or processes than its limits allow.
"""
from __future__ import annotations

import os
import socket
import threading

import pytest

from autograder import config, sandbox

from test_sandbox_cleanup import kernelspecs, runtime, start_kernel  # noqa: F401  (fixtures)

pytestmark = pytest.mark.skipif(not sandbox.available(), reason="the sandbox needs root and util-linux namespaces")

ROOT = config.ROOT


def run(kc, code: str, timeout: float = 60) -> str:
    """Execute `code`; return its error as 'Name: value', or its printed output."""
    msg_id = kc.execute(code, stop_on_error=False)
    out, error = [], ""
    while True:
        msg = kc.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            out.append(content["text"])
        elif kind == "error":
            error = f"{content['ename']}: {content['evalue']}"
        elif kind == "status" and content["execution_state"] == "idle":
            return error or "".join(out)


@pytest.fixture
def grading_folder(tmp_path, monkeypatch):
    """A grading folder with a gradebook and another student's submission in it."""
    folder = tmp_path / "grading"
    (folder / "submitted" / "alice" / "lab00_triton_warmup").mkdir(parents=True)
    (folder / "submitted" / "alice" / "lab00_triton_warmup" / "lab00_triton_warmup.ipynb").write_text("{}")
    (folder / "gradebook.db").write_text("hidden tests")
    monkeypatch.setenv("COURSE_GRADING_DIR", str(folder))
    return folder


def test_hostile_code_that_runs_is_contained(runtime, tmp_path, grading_folder):  # noqa: F811
    lab_folder = tmp_path / "lab00_triton_warmup"  # the kernel binds this lab's references
    lab_folder.mkdir()
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.5)
    seen = []
    threading.Thread(target=lambda: seen.append(_accept(server)), daemon=True).start()
    km, kc = start_kernel(runtime, lab_folder)
    try:
        cases = {
            "writes the README": (f"open({str(ROOT / 'README.md')!r}, 'a').write('pwned')", "Read-only file system"),
            "deletes the kernels": (f"import shutil; shutil.rmtree({str(ROOT / 'kernels')!r})", "OSError"),
            "reads a solution": (f"open({str(ROOT / 'solutions' / 'lab00_triton_warmup' / 'lab00_triton_warmup.ipynb')!r})",
                                 "No such file"),
            "reads a reference kernel": (f"open({str(ROOT / 'kernels' / 'vector_add.py')!r})", "No such file"),
            "imports an unbound reference": ("import kernels.attention", "No module named"),
            "reads the gradebook": (f"open({str(grading_folder / 'gradebook.db')!r})", "No such file"),
            "lists other submissions": (f"import glob; print(glob.glob({str(grading_folder / 'submitted' / '*')!r}))", "[]"),
            "opens a connection": (f"import socket; socket.create_connection(('127.0.0.1', {server.getsockname()[1]}), "
                                   f"timeout=3)", "Network is unreachable"),
            "takes 8 GiB": ("x = bytearray(8 * 2**30)", "MemoryError"),
            "signals itself": ("import os, signal; os.kill(os.getpid(), signal.SIGKILL); print('still alive')",
                               "still alive"),
            # last: it uses up the pids limit (and then reaps its children itself)
            "forks 600 times": ("import os, signal, time\npids = []\ntry:\n    for _ in range(600):\n"
                                "        p = os.fork()\n        if p == 0:\n            time.sleep(60); os._exit(0)\n"
                                "        pids.append(p)\nexcept BlockingIOError as exc:\n    print(f'BlockingIOError after "
                                "{len(pids)} forks')\nfinally:\n    for p in pids:\n        os.kill(p, signal.SIGKILL)\n"
                                "        os.waitpid(p, 0)", "BlockingIOError"),
        }
        results = {name: run(kc, code) for name, (code, _) in cases.items()}
    finally:
        km.shutdown_kernel(now=True)
        server.close()
    for name, (_, expected) in cases.items():
        assert expected in results[name], f"{name}: {results[name]!r}"
    assert not seen or seen == [None], "a sandboxed kernel reached a server on loopback"
    assert (ROOT / "kernels" / "vector_add.py").exists() and "pwned" not in (ROOT / "README.md").read_text()
    assert (grading_folder / "gradebook.db").read_text() == "hidden tests"


def _accept(server):
    try:
        return server.accept()
    except OSError:
        return None
