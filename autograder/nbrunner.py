"""Run `nbgrader` commands in fresh processes that start in milliseconds, not seconds.

A fresh process per nbgrader command is what keeps one submission's grading apart from the
next one's. Started the usual way (`python -m nbgrader`), each such process spends about
3.5 s of CPU importing nbgrader (nbformat's JSON-schema formats alone build a grammar at
import) and a second tearing the interpreter down, more than all its own work on a small
notebook. So the processes are forked from a server instead: a server imports nbgrader once,
then for each command forks a child that becomes `nbgrader ARGS`, with its own environment,
working folder, output files and process group. The child is as separate from the next one
as a new process is (and the notebook's kernel is still a fresh sandboxed process that
nbgrader starts); only the imports are shared, copy-on-write.

(The standard library's multiprocessing "forkserver" does the same, but re-runs the parent's
`__main__` in every child, which for `python -m autograder` means importing torch each time.)

Each server runs one command at a time and tells its client the child's pid, then its exit
status; concurrent callers (the grading workers) each take an idle server from a pool. `run`
has the shape of `subprocess.run(capture_output=True, text=True, timeout=...)`: it returns a
CompletedProcess, and raises TimeoutExpired after killing the command's process group.
"""
from __future__ import annotations

import atexit
import importlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# What the server imports once; every child starts with them in memory.
PRELOAD = ("nbgrader.apps.nbgraderapp", "nbgrader.preprocessors", "nbclient", "nbconvert", "jupyter_client",
           "sqlalchemy", "autograder.config", "autograder.feedback", "autograder.visible_checks")


# --- the server side -------------------------------------------------------------------------

def serve() -> None:
    """The server's loop: one JSON request per line on stdin, answered with {"pid"}, then {"rc"}."""
    for name in PRELOAD:
        importlib.import_module(name)
    try:
        _warm_up()
    except Exception as exc:  # noqa: BLE001  (only slower without it; tests/test_nbrunner.py checks it works)
        print(f"nbgrader fork server: warm-up failed ({type(exc).__name__}: {exc}); children start cold",
              file=sys.stderr)
    requests, replies = sys.stdin.buffer, sys.stdout.buffer
    for line in requests:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _become_nbgrader(**request)  # never returns
        replies.write(json.dumps({"pid": pid}).encode() + b"\n")
        replies.flush()
        _, status = os.waitpid(pid, 0)
        replies.write(json.dumps({"rc": os.waitstatus_to_exitcode(status)}).encode() + b"\n")
        replies.flush()


def _warm_up() -> None:
    """Do once, here, the work that every child would otherwise redo from cold: the gradebook's
    table mappings, and one small notebook rendered through nbgrader's feedback template (Jinja's
    lexer, the syntax highlighter's rules, the HTML pass's selectors are compiled on first use).
    A feedback page then costs about 0.3 s less. Only code and caches: no file, no course state."""
    import nbformat
    import sqlalchemy.orm
    from nbconvert.exporters import HTMLExporter
    from nbgrader import api  # noqa: F401  (its tables, for the mappers)
    sqlalchemy.orm.configure_mappers()
    formgrader = Path(importlib.import_module("nbgrader").__file__).parent / "server_extensions" / "formgrader"
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# A title\n\nSome *text*, `code` and $x^2$."),
        nbformat.v4.new_code_cell("import torch\nx = torch.ones(3)  # a comment", outputs=[
            nbformat.v4.new_output("stream", text="a line\n"),
            nbformat.v4.new_output("error", ename="ValueError", evalue="no", traceback=["ValueError: no"])])])
    notebook.metadata["language_info"] = {"name": "python", "pygments_lexer": "ipython3"}
    # a graded test cell, as nbgrader's GetGrades leaves it for the template
    notebook.cells[1].metadata["nbgrader"] = dict(grade=True, solution=False, task=False, grade_id="warm_up",
                                                  points=1, score=0, comment="a *comment*")
    grades = {"nbgrader": dict(notebook="warm-up", score=0, max_score=1, late_penalty=0)}
    exporter = HTMLExporter(template_name="feedback", extra_template_basedirs=[str(formgrader / "templates")],
                            extra_template_paths=[str(formgrader / "static" / "node_modules" / "bootstrap" / "dist" / "css")])
    exporter.from_notebook_node(notebook, resources=grades)  # set up as nbgrader's GenerateFeedback does


def _become_nbgrader(argv: list[str], env: dict, cwd: str, stdout: str, stderr: str) -> None:
    """In the forked child: run `nbgrader ARGV` from `cwd` with `env`, output into two files."""
    try:
        os.setsid()  # a process group of its own: a timeout kills it with everything it started
        os.environ.clear()
        os.environ.update(env)
        os.chdir(cwd)
        sys.path[0:0] = [cwd]  # as `python -m nbgrader` run from cwd has it
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)  # the server's request pipe is not the command's business
        for fd, path in ((1, stdout), (2, stderr)):
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), fd)
        sys.stdin = open(0, closefd=False)
        sys.stdout = open(1, "w", buffering=1, closefd=False)
        sys.stderr = open(2, "w", buffering=1, closefd=False)
        sys.argv = ["nbgrader", *argv]
        from nbgrader.apps.nbgraderapp import main
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001  (reported as `python -m nbgrader` reports an uncaught error)
        import traceback
        traceback.print_exc()
        code = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)  # no interpreter teardown: the caller reads what it needs from the files


# --- the client side -------------------------------------------------------------------------

class _Server:
    def __init__(self):
        # run from the course root so that `autograder` imports from this checkout
        from . import config
        self.process = subprocess.Popen([sys.executable, "-c", "import autograder.nbrunner as r; r.serve()"],
                                        cwd=config.ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._pending = b""

    def _reply(self, deadline: float | None) -> dict | None:
        """The server's next reply line, or None if `deadline` passes first."""
        fd = self.process.stdout.fileno()
        while b"\n" not in self._pending:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([fd], [], [], wait)[0]:
                return None
            chunk = os.read(fd, 4096)
            if not chunk:
                raise RuntimeError(f"the nbgrader fork server died (exit status {self.process.wait()})")
            self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        return json.loads(line)

    def run(self, request: dict, timeout: float | None) -> tuple[int, bool]:
        """(exit status, timed out) of one command."""
        self.process.stdin.write(json.dumps(request).encode() + b"\n")
        self.process.stdin.flush()
        pid = self._reply(None)["pid"]
        deadline = None if timeout is None else time.monotonic() + timeout
        reply = self._reply(deadline)
        if reply is not None:
            return reply["rc"], False
        try:
            os.killpg(pid, signal.SIGKILL)  # the server reaps it, then says so
        except ProcessLookupError:
            pass
        return self._reply(None)["rc"], True

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()  # the server's loop ends at end of input
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


_idle: list[_Server] = []
_lock = threading.Lock()


def _take() -> _Server:
    with _lock:
        while _idle:
            server = _idle.pop()
            if server.process.poll() is None:
                return server
    return _Server()


def _give_back(server: _Server) -> None:
    with _lock:
        _idle.append(server)


@atexit.register
def shutdown() -> None:
    """Stop the idle servers (the pool starts new ones if needed again)."""
    with _lock:
        servers = list(_idle)
        _idle.clear()
    for server in servers:
        server.close()


def run(argv: list[str], env: dict, cwd: Path, timeout: float | None = None) -> subprocess.CompletedProcess:
    """`nbgrader ARGV` from `cwd` with exactly `env`, in a fresh forked process; like
    subprocess.run(["nbgrader", *argv], capture_output=True, text=True, timeout=timeout)."""
    server = _take()
    with tempfile.TemporaryDirectory(prefix="nbgrader-run-") as scratch:
        stdout, stderr = Path(scratch) / "stdout", Path(scratch) / "stderr"
        request = dict(argv=list(argv), env=dict(env), cwd=str(cwd), stdout=str(stdout), stderr=str(stderr))
        try:
            code, timed_out = server.run(request, timeout)
        except BaseException:
            server.close()  # a server in an unknown state is not reused
            raise
        _give_back(server)
        out = stdout.read_text(errors="replace") if stdout.exists() else ""
        err = stderr.read_text(errors="replace") if stderr.exists() else ""
    if timed_out:
        raise subprocess.TimeoutExpired(["nbgrader", *argv], timeout, output=out, stderr=err)
    return subprocess.CompletedProcess(["nbgrader", *argv], code, out, err)
