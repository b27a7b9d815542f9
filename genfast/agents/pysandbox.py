"""The Python tool: run untrusted code in a restricted child process.

Layers, each stopping what the others might miss:

1. a fresh temporary working folder per run; the child is `python -I` (isolated: no environment
   variables, no user site-packages, no current folder on sys.path);
2. resource limits set in the child before it execs (preexec_fn): RLIMIT_CPU (CPU seconds),
   RLIMIT_AS (address space: a 2 GB allocation fails with MemoryError), RLIMIT_FSIZE (largest file
   it may write), RLIMIT_NPROC;
3. a wall-clock timeout: the child runs in its own process group, killed as a whole when late
   (a `time.sleep` uses no CPU, so RLIMIT_CPU alone would not stop it);
4. an audit hook (PEP 578, `sys.addaudithook`) installed before the user's code runs: it refuses
   `open` outside the working folder (after resolving symlinks and `..`, read-only access to the
   Python installation excepted so that `import json` works), every `socket.*` event,
   subprocess / os.exec* / os.system / os.fork / os.posix_spawn, and ctypes;
5. where `unshare --user --net` works, the child also runs in a new network namespace with no
   interfaces but a loopback that is down: no connection can leave it even without the hook.
   Where it does not (containers often forbid user namespaces), there is no network boundary.

The audit hook is a TRIPWIRE, NOT A SANDBOX. PEP 578 ("Why Not A Sandbox") and the documentation
of sys.addaudithook say so: hooks "are not suitable for implementing a sandbox. In particular,
malicious code can trivially disable or bypass hooks added using this function". It is Python code in the same interpreter as the code it
watches, and that code can switch it off: the hook reads globals of the child's `__main__`
(`inside`, `BLOCKED`, ...), so `sys.modules['__main__'].inside = lambda p: True` lets every `open`
through (tests/test_lab06.py does exactly that). The hook cannot be unregistered, but what it
checks can be changed, and there are other ways round it. It turns an honest mistake of a model's
code into a clear error; it stops nothing hostile.

The boundary is the child process and what the kernel enforces on it: the resource limits
(inherited by anything it starts) and the network namespace hold whatever the code does in
Python. Two things do not: files, since the child runs as the calling user without a filesystem
namespace, so code that disables the hook can read and write whatever that user can; and the
wall-clock kill, which reaches the child's process group only, so code that disables the hook
can fork a process that leaves the group (os.setsid) and outlives the run (there is no pid
namespace or cgroup; RLIMIT_CPU still bounds its CPU time, not its lifetime). For hostile code,
run the child in a container or a VM, as a separate user, with a read-only root and a pid
namespace (bubblewrap, nsjail, gVisor). Not a hardened jail in any case.
"""
from __future__ import annotations

import functools
import os
import resource
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .tools import Tool, schema

# The child's first code. It reads the user's program, installs the hook, then runs the program.
BOOTSTRAP = r'''
import sys, os
WORK = os.path.realpath(sys.argv[1])
READ_OK = tuple(os.path.realpath(p) + os.sep for p in sys.argv[2].split(os.pathsep) if p)
source = open(os.path.join(WORK, "main.py"), encoding="utf-8").read()
os.chdir(WORK)
BLOCKED = ("socket.", "subprocess.", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
           "os.system", "os.kill", "os.killpg", "ctypes.", "pty.", "os.chroot", "os.setuid", "sys.remote_exec")
WRITE_EVENTS = ("os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.symlink",
                "os.link", "os.truncate", "os.utime", "shutil.rmtree")
LIST_EVENTS = ("os.listdir", "os.scandir")
# C modules that act without raising audit events: _posixsubprocess.fork_exec starts a program
# (which the hook would not follow), ctypes calls any C function.
NO_IMPORT = ("ctypes", "_ctypes", "_posixsubprocess", "_xxsubinterpreters", "_testcapi", "_testinternalcapi")

def inside(path):
    if isinstance(path, int):
        return True                       # an already-open file descriptor
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    real = os.path.realpath(os.path.join(WORK, path))
    return real == WORK or real.startswith(WORK + os.sep)

def hook(event, args):
    if event == "open":
        path, mode, flags = (list(args) + [None, None])[:3]
        if path is None or inside(path):
            return
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or \
                  (isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
        real = os.path.realpath(os.fsdecode(path) if isinstance(path, bytes) else str(path))
        if not writing and real.startswith(READ_OK) and real.endswith((".py", ".pyc", ".so", ".pth")):
            return                        # importing from the Python installation
        raise PermissionError(f"sandbox: access outside the working folder refused: {path}")
    if event == "import" and args and args[0] in NO_IMPORT:
        raise PermissionError(f"sandbox: import of {args[0]} is not allowed")
    if event == "import" and len(args) > 1 and args[1] and \
            not (os.path.realpath(os.fsdecode(args[1])) + os.sep).startswith(READ_OK):
        # a native extension (the event names its file) from outside the Python installation,
        # e.g. a .so the program wrote itself: arbitrary C code, so no
        raise PermissionError(f"sandbox: loading native code from {args[1]} is not allowed")
    if event.startswith(BLOCKED):
        raise PermissionError(f"sandbox: {event} is not allowed")
    if event in LIST_EVENTS:              # the import system lists package folders
        path = args[0] if args and args[0] is not None else "."
        if isinstance(path, int) or inside(path) or (os.path.realpath(os.fsdecode(path)) + os.sep).startswith(READ_OK):
            return
        raise PermissionError(f"sandbox: {event} outside the working folder refused")
    if event.startswith(WRITE_EVENTS):
        for a in args[:2]:
            if isinstance(a, (str, bytes, os.PathLike)) and not inside(os.fspath(a)):
                raise PermissionError(f"sandbox: {event} outside the working folder refused")

sys.addaudithook(hook)
del hook
code = compile(source, "main.py", "exec")
exec(code, {"__name__": "__main__", "__builtins__": __builtins__})
'''


@dataclass
class RunResult:
    stdout: str
    stderr: str
    returncode: int | None
    timed_out: bool
    workdir: str

    def observation(self, limit: int = 1500) -> str:
        """What the agent reads: output, the error's last line, or why the run was stopped."""
        out = self.stdout[-limit:]
        if self.timed_out:
            return (out + "\n" if out else "") + "error: stopped at the time limit"
        if self.returncode != 0:
            lines = [ln for ln in self.stderr.strip().splitlines() if ln.strip()]
            last = lines[-1] if lines else f"exit status {self.returncode}"
            if self.returncode is not None and self.returncode < 0:
                last += f" (killed by signal {-self.returncode}: a resource limit)"
            return (out + "\n" if out else "") + f"error: {last}"
        return out if out else "(no output)"


@functools.lru_cache(maxsize=1)
def network_namespace_prefix() -> tuple[str, ...]:
    """('unshare', '--user', '--net', '--map-root-user'?) if it works here, else ()."""
    exe = shutil.which("unshare")
    if exe is None:
        return ()
    for prefix in ((exe, "--user", "--net", "--map-root-user"), (exe, "--user", "--net")):
        try:
            r = subprocess.run([*prefix, "true"], capture_output=True, timeout=5)
            if r.returncode == 0:
                return prefix
        except (OSError, subprocess.SubprocessError):
            pass
    return ()


def _limits(cpu_s: int, memory_mb: int, file_mb: int, nproc: int):
    def apply():
        os.setsid()                                      # own process group: killed together
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
        resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_mb << 20, file_mb << 20))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        try:
            resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
        except (ValueError, OSError):
            pass
    return apply


def _python_read_paths() -> str:
    paths = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    return os.pathsep.join(sorted(paths))


def run_python(code: str, timeout: float = 5.0, memory_mb: int = 512, file_mb: int = 16,
               workdir: str | None = None, network_namespace: bool = True) -> RunResult:
    """Run `code` in the sandbox (see the module docstring); never raises for the code's sake."""
    own = workdir is None
    work = Path(workdir or tempfile.mkdtemp(prefix="agent-py-")).resolve()
    (work / "main.py").write_text(code, encoding="utf-8")
    cmd = [sys.executable, "-I", "-c", BOOTSTRAP, str(work), _python_read_paths()]
    prefix = network_namespace_prefix() if network_namespace else ()
    # RLIMIT_NPROC counts all processes of the user: leave room for the ones already running
    nproc = 64 if os.geteuid() != 0 else 4096
    proc = subprocess.Popen([*prefix, *cmd], cwd=work, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                            preexec_fn=_limits(int(timeout) + 1, memory_mb, file_mb, nproc))
    try:
        out, err = proc.communicate(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, err = proc.communicate()
        timed_out = True
    result = RunResult(out.decode("utf-8", "replace"), err.decode("utf-8", "replace"), proc.returncode,
                       timed_out or proc.returncode == -signal.SIGXCPU, str(work))
    if own:
        shutil.rmtree(work, ignore_errors=True)
    return result


def python_tool(timeout: float = 5.0, memory_mb: int = 512) -> Tool:
    """The `python` tool: runs a program in the sandbox, observation = its output or its error."""
    return Tool("python", "Run a short Python program in a sandbox (no files outside its folder, no network); "
                "print what you want to see.",
                schema({"code": {"type": "string", "description": "a Python program"}}),
                lambda code: run_python(code, timeout=timeout, memory_mb=memory_mb).observation(),
                timeout=timeout + 5)
