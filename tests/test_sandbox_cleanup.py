"""A sandboxed kernel's whole process tree dies with whatever ends it.

Each test starts a kernel through the "course-sandbox" kernelspec the way nbgrader does (a
jupyter_client KernelManager, IPC transport, sockets in a runtime folder), then ends it one
way: a normal shutdown, a kill of the kernel's handle (the `unshare` process), an immediate
shutdown of a kernel that ignores SIGTERM and has left the process group, or the death of the
process that started it. Each time no process of that sandbox may remain. An interrupt must
still stop a running cell. Only this test's own sandboxes are looked at (and, as a last
resort, killed): other grading runs on the machine are left alone.
"""
from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from autograder import config, sandbox

pytestmark = pytest.mark.skipif(not sandbox.available(), reason="the sandbox needs root and util-linux namespaces")

# Generous: a kernel starts in about 3 s, but one CI run saw a machine stall for minutes while
# another test file ran, and a limit only costs time when something is really broken.
START_TIMEOUT_S = 300
GONE_WITHIN_S = 10

# Kernel code of a submission that fights being stopped: it ignores SIGTERM, leaves the
# kernel's process group (so a kill of the group misses it), and leaves two sleeping children
# behind, one in a session of its own and one plain fork.
STUBBORN = textwrap.dedent("""
    import ctypes, os, signal, subprocess
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.setsid()
    _sleeper = subprocess.Popen(["sleep", "300"], start_new_session=True)
    if os.fork() == 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        import time; time.sleep(300); os._exit(0)
    _sig = ctypes.c_int()
    ctypes.CDLL(None).prctl(2, ctypes.byref(_sig))  # PR_GET_PDEATHSIG
    print("pid", os.getpid(), "pdeathsig", _sig.value)
""")


@pytest.fixture(scope="module")
def kernelspecs(tmp_path_factory):
    folder = sandbox.install_kernelspec(tmp_path_factory.mktemp("jupyter"))
    old = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = os.pathsep.join([str(folder), old or ""])
    yield folder
    if old is None:
        os.environ.pop("JUPYTER_PATH", None)
    else:
        os.environ["JUPYTER_PATH"] = old


@pytest.fixture
def runtime(kernelspecs, tmp_path):
    """A runtime folder as grading makes one; whatever the test leaves behind is killed."""
    path = sandbox.new_runtime_dir()
    yield path
    leaked = sandbox.kill_leftovers(path)
    shutil.rmtree(path, ignore_errors=True)
    sandbox.cleanup_cgroups()
    assert not leaked, f"had to kill leftover sandbox processes: {leaked}"


def start_kernel(runtime: Path, cwd: Path):
    from jupyter_client import KernelManager
    km = KernelManager(kernel_name=sandbox.KERNEL_NAME, transport="ipc", ip=str(runtime / "kernel"))
    km.start_kernel(cwd=str(cwd))  # nbgrader starts it in the submission's folder
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=START_TIMEOUT_S)
    return km, kc


def run(kc, code: str, timeout: float = 30) -> tuple[dict, str]:
    out: list[str] = []

    def hook(msg):
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])

    reply = kc.execute_interactive(code, timeout=timeout, output_hook=hook)
    return reply["content"], "".join(out)


def wait_gone(runtime: Path, within: float = GONE_WITHIN_S) -> list[str]:
    deadline = time.monotonic() + within
    while (left := sandbox.leftover_processes(runtime)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def make_stubborn(kc, runtime: Path) -> None:
    content, out = run(kc, STUBBORN)
    assert content["status"] == "ok", content
    # the kernel is the namespace's init, and unshare --kill-child gave it SIGKILL as its
    # parent-death signal (setpriv set it again after dropping capabilities)
    assert out.split() == ["pid", "1", "pdeathsig", str(int(signal.SIGKILL))], out
    left = sandbox.leftover_processes(runtime)
    # unshare, the kernel, its fork, and the sleeper (seen by its PID namespace, not its argv)
    assert len(left) >= 4 and any(line.split(" ", 1)[1] == "sleep 300" for line in left), left


def close(km, kc) -> None:
    kc.stop_channels()
    try:
        km.shutdown_kernel(now=True)
    except Exception:
        pass
    km.cleanup_resources()


def test_handle_is_unshare_and_normal_shutdown_leaves_nothing(runtime, tmp_path):
    km, kc = start_kernel(runtime, tmp_path)
    try:
        handle = km.provisioner.process.pid
        # main() exec'd: jupyter_client's process is unshare itself, nothing in between
        argv = Path(f"/proc/{handle}/cmdline").read_bytes().split(b"\0")
        assert Path(argv[0].decode()).name == "unshare", argv[:3]
        assert any(line.startswith(f"{handle} unshare ") for line in sandbox.leftover_processes(runtime))
        content, _ = run(kc, "print(1 + 1)")
        assert content["status"] == "ok"
        kc.stop_channels()
        km.shutdown_kernel()  # a shutdown request, as nbgrader ends a notebook
        assert wait_gone(runtime) == []
    finally:
        close(km, kc)


@pytest.mark.parametrize("how", ["sigkill_handle", "shutdown_now"])
def test_stubborn_kernel_dies_with_its_handle(runtime, tmp_path, how):
    km, kc = start_kernel(runtime, tmp_path)
    try:
        make_stubborn(kc, runtime)
        if how == "sigkill_handle":
            os.kill(km.provisioner.process.pid, signal.SIGKILL)  # unshare alone, not the group
        else:
            kc.stop_channels()
            km.shutdown_kernel(now=True)
        assert wait_gone(runtime) == []
    finally:
        close(km, kc)


PARENT = """
import sys, time
sys.path.insert(0, {root!r})
from pathlib import Path
from jupyter_client import KernelManager
km = KernelManager(kernel_name="course-sandbox", transport="ipc", ip=str(Path({runtime!r}) / "kernel"))
km.start_kernel(cwd={cwd!r})
kc = km.client(); kc.start_channels(); kc.wait_for_ready(timeout={timeout})
reply = kc.execute_interactive({code!r}, timeout={timeout})
print("ready", reply["content"]["status"], flush=True)
time.sleep(600)
"""


def test_kernel_tree_dies_with_the_process_that_started_it(runtime, tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(PARENT.format(root=str(config.ROOT), runtime=str(runtime), cwd=str(tmp_path),
                                    timeout=START_TIMEOUT_S, code=STUBBORN))
    errors = tmp_path / "parent.stderr"  # a file, not a pipe: the kernel's log must never block it
    with errors.open("w") as err:
        parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        deadline, line = time.monotonic() + START_TIMEOUT_S + 30, ""
        while not line.startswith("ready"):  # the kernel's own output comes first
            ready, _, _ = select.select([parent.stdout], [], [], max(0.0, deadline - time.monotonic()))
            line = parent.stdout.readline() if ready else ""
            assert line, (f"the parent did not start its kernel (exit status {parent.poll()}); "
                          f"its stderr ends:\n{errors.read_text()[-3000:]}")
        assert line.split() == ["ready", "ok"], line
        assert len(sandbox.leftover_processes(runtime)) >= 4
        parent.kill()  # as a wall-clock timeout kills nbgrader: no shutdown, no cleanup
        parent.wait(timeout=10)
        assert wait_gone(runtime) == []
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        parent.stdout.close()


def test_interrupt_stops_a_running_cell(runtime, tmp_path):
    km, kc = start_kernel(runtime, tmp_path)
    try:
        # nbgrader runs with allow_errors, so an error does not abort the cells queued after it
        msg_id = kc.execute("while True: pass", stop_on_error=False)
        deadline = time.monotonic() + 30
        while True:  # wait until the cell runs, then interrupt it as a cell timeout does
            msg = kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
            if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "execute_input":
                break
        time.sleep(0.5)
        km.interrupt_kernel()
        while True:
            reply = kc.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        assert (reply["content"]["status"], reply["content"].get("ename")) == ("error", "KeyboardInterrupt"), reply
        content, out = run(kc, "print('still alive')")  # the kernel survives its interrupt
        assert (content["status"], out.strip()) == ("ok", "still alive"), content
        kc.stop_channels()
        km.shutdown_kernel()
        assert wait_gone(runtime) == []
    finally:
        close(km, kc)
