"""Run a submission's Jupyter kernel in a sandbox.

nbgrader starts kernels through a kernelspec; the course's "course-sandbox" kernelspec
starts `python -m autograder.sandbox CONNECTION_FILE`, which execs the real ipykernel
inside fresh Linux namespaces:

- network: a new network namespace with no interface up, so no connection of any kind
  (the kernel talks to nbgrader over IPC sockets, not TCP, for exactly this reason);
- processes: a new PID namespace, so the submission sees and signals only its own
  processes, and all of them die with the kernel; a pids cgroup caps forks;
- lifetime: the whole sandbox dies with whatever kills it and with nbgrader itself (see
  "Process tree" below), so no kernel outlives its grading run;
- files: the root filesystem read-only; a private /tmp holding a copy of the submission's
  folder as the working directory; solutions/, the git history, the grading folder
  (hidden tests, the gradebook, other students' submissions) replaced by empty mounts;
- privileges: every capability dropped (no remounting, no escaping the mounts), plus
  resource limits on file size and, without a GPU, address space.

Where namespaces cannot be made (not root, no `unshare`), `available()` is False and
grading falls back to nbgrader's plain kernel, saying so once in the batch log.

Process tree. jupyter_client starts `python -m autograder.sandbox` in a new session (its own
process group) and keeps that process as the kernel's handle; `main` execs, so the handle *is*
`unshare`, with no process in between:

    nbgrader (KernelManager)
     └─ unshare            pid = pgid = the handle; blocks SIGINT and SIGTERM while it waits
         └─ ipykernel      PID 1 of the new PID namespace (sh, setpriv, prlimit exec into it)
             └─ whatever the submission starts

- nbgrader kills the kernel with SIGKILL to the process group (after a shutdown request, or at
  once with `now=True`): unshare and the kernel die, and with the namespace's init every process
  inside it. Whatever left the process group (setsid) dies with the namespace all the same.
- `unshare --kill-child=SIGKILL` gives its child the parent-death signal SIGKILL, so killing
  only the handle (SIGKILL; SIGTERM is blocked) kills the init, hence the namespace. setpriv
  sets it again after dropping capabilities (some LSMs clear it on credential changes).
- `main` sets the parent-death signal SIGKILL on itself before the exec (it survives the exec:
  unshare is neither set-user-ID nor file-capable), so when nbgrader dies without shutting its
  kernels down (a wall-clock timeout SIGKILLs it, a crash), unshare, then the namespace, die too.
  The signal fires when the *thread* that started the kernel exits: jupyter_client starts
  kernels from its event loop's thread, which lives as long as the manager.
- interrupts: jupyter_client's SIGINT goes to the process group, so it reaches the ipykernel
  directly (unshare blocks it; as a namespace init the kernel gets only signals it handles, and
  ipykernel handles SIGINT).

`leftover_processes` lists sandboxes still alive on the machine, `kill_leftovers` SIGKILLs them:
a last resort for tests and the end of a batch, never the normal way a kernel ends.
"""
from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

from . import config, grader

KERNEL_NAME = "course-sandbox"
REFERENCES_DIR = "kernels"      # hidden from the notebook; reached by autograder.grader.bind only
RUNTIME_ROOT = Path("/run/course-sandbox")  # connection files and IPC sockets of sandboxed kernels
MAX_PIDS = 512                  # processes + threads per submission
MAX_FILE_BYTES = 256 * 2**20    # largest file a submission may write
MAX_ADDRESS_SPACE = 3 * 2**30  # CPU only: CUDA maps far more virtual memory than it uses
THREAD_STACK_BYTES = 2 * 2**20  # Python threads' stacks (glibc's default, 8 MB, counts against the
                                # address space: numba's CUDA simulator runs one thread per CUDA thread)
TMP_SIZE = "2g"                 # the private /tmp (counts against memory)

# Runs inside the new namespaces as root, then drops every capability and execs the kernel.
STAGE2 = r"""
set -eu
R="$SANDBOX_RUNTIME"
mount --make-rprivate /
# 1. stash what must survive the fresh /tmp and /dev: the course or its Python may live under
#    /tmp, and the kernel needs a few device nodes (and the GPU's, when there is one)
i=0
for path in $SANDBOX_KEEP; do
  i=$((i+1)); mkdir -p "$R/keep/$i"; mount --bind "$path" "$R/keep/$i"
done
mkdir -p "$R/dev"
for node in null zero full random urandom $SANDBOX_DEVICES; do
  if [ -e "/dev/$node" ]; then touch "$R/dev/$node"; mount --bind "/dev/$node" "$R/dev/$node"; fi
done
# 2. a private /tmp (the working folder) and a minimal /dev
mount -t tmpfs -o size=$SANDBOX_TMP_SIZE,mode=1777 tmpfs /tmp
mount -t tmpfs -o size=1m,mode=755 tmpfs /dev
for node in null zero full random urandom $SANDBOX_DEVICES; do
  if [ -e "$R/dev/$node" ]; then touch "/dev/$node"; mount --bind "$R/dev/$node" "/dev/$node"; fi
done
mkdir -p /dev/shm && mount -t tmpfs -o size=64m,mode=1777 tmpfs /dev/shm
ln -s /proc/self/fd /dev/fd
i=0
for path in $SANDBOX_KEEP; do
  i=$((i+1)); mkdir -p "$path"; mount --bind "$R/keep/$i" "$path"
done
mkdir -p /tmp/work /tmp/home /tmp/.runtime
cp -r "$R/work"/. /tmp/work/
# 3. hide the runtime folders of other kernels, then put this kernel's own back in place
mount --bind "$R" /tmp/.runtime
mount -t tmpfs -o size=1m tmpfs "$SANDBOX_RUNTIME_ROOT"
mkdir -p "$R"
mount --bind /tmp/.runtime "$R"
# 4. hide what a submission must never read
for path in $SANDBOX_HIDE; do
  if [ -d "$path" ]; then mount -t tmpfs -o ro,size=1m tmpfs "$path"; fi
done
# 5. every mount read-only except the private /tmp, /dev/shm and this kernel's sockets
awk '{print $5}' /proc/self/mountinfo | sort -u | while read -r m; do
  case "$m" in /tmp|/dev/shm|"$R") continue ;; esac
  mount -o remount,bind,ro "$m" 2>/dev/null || true
done
cd /tmp/work
export COURSE_SANDBOXED=1 HOME=/tmp/home TMPDIR=/tmp MPLCONFIGDIR=/tmp/home/.mpl TRITON_CACHE_DIR=/tmp/home/.triton \
       NUMBA_CACHE_DIR=/tmp/home/.numba PYTHONDONTWRITEBYTECODE=1
exec setpriv --pdeathsig SIGKILL --inh-caps=-all --bounding-set=-all --no-new-privs -- \
     prlimit --fsize=$SANDBOX_FSIZE $SANDBOX_AS -- "$@"
"""


def _tools_present() -> bool:
    return os.geteuid() == 0 and all(shutil.which(t) for t in ("unshare", "setpriv", "prlimit", "mount"))


def available() -> bool:
    """Can this machine build the sandbox? (root, util-linux, namespaces allowed)"""
    if os.environ.get("COURSE_SANDBOX") == "0" or not _tools_present():
        return False
    probe = subprocess.run(["unshare", "--mount", "--net", "--pid", "--fork", "--mount-proc", "true"],
                           capture_output=True, timeout=30)
    return probe.returncode == 0


def hidden_paths() -> list[str]:
    root = config.ROOT
    # the reference kernels too: the grader binds them through a handle opened beforehand
    paths = [root / config.SOURCE_DIR, root / ".git", root / ".dev", root / REFERENCES_DIR, root / "tests",
             config.grading_dir()]
    return [str(p) for p in paths if p.exists()]


def kept_under_tmp() -> list[str]:
    """Folders the kernel needs that live under /tmp (which the sandbox replaces): the course
    and the Python environment, outermost first, none inside another."""
    needed = {config.ROOT, Path(sys.prefix), Path(sys.base_prefix)}
    needed |= {Path(p) for p in sys.path if p and Path(p).is_dir()}
    under_tmp = sorted({p.resolve() for p in needed if p.resolve().is_relative_to("/tmp")}, key=lambda p: len(p.parts))
    kept: list[Path] = []
    for path in under_tmp:
        if not any(path.is_relative_to(k) for k in kept):
            kept.append(path)
    return [str(p) for p in kept]


def install_kernelspec(folder: Path) -> Path:
    """Write the sandbox kernelspec under `folder`/kernels; add `folder` to JUPYTER_PATH."""
    spec = folder / "kernels" / KERNEL_NAME
    spec.mkdir(parents=True, exist_ok=True)
    import json
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "autograder.sandbox", "{connection_file}"],
        "display_name": "Python 3 (course sandbox)",
        "language": "python",
        "interrupt_mode": "signal",
    }, indent=1))
    return folder


def own_runtimes() -> Path:
    """The folder of this process's runtime folders: `leftover_processes(own_runtimes())` are the
    sandboxes this process started and that are still alive (not another grading process's)."""
    return RUNTIME_ROOT / str(os.getpid())


def new_runtime_dir() -> Path:
    """A private folder for one nbgrader run's connection file and IPC sockets."""
    own_runtimes().mkdir(mode=0o711, parents=True, exist_ok=True)
    RUNTIME_ROOT.chmod(0o711)
    path = own_runtimes() / uuid.uuid4().hex
    path.mkdir(mode=0o700)
    return path


def _join_pids_cgroup() -> None:
    """Best effort: cap processes and threads with a pids cgroup (v1 or v2)."""
    for base in (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup")):
        if (base / "cgroup.procs").exists() and os.access(base, os.W_OK):
            group = base / f"course-sandbox-{os.getpid()}"
            try:
                group.mkdir(exist_ok=True)
                (group / "pids.max").write_text(str(MAX_PIDS))
                (group / "cgroup.procs").write_text(str(os.getpid()))
                return
            except OSError:
                continue


def cleanup_cgroups() -> None:
    """Remove empty cgroups left by finished sandboxes."""
    for base in (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup")):
        for group in base.glob("course-sandbox-*"):
            try:
                group.rmdir()
            except OSError:
                pass


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _die_with_parent() -> None:
    """Have the kernel SIGKILL this process (and, after the exec, `unshare`) when its parent dies."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(PR_SET_PDEATHSIG): {os.strerror(errno)}")


def _read_proc(pid: int, name: str) -> bytes | None:
    try:
        with open(f"/proc/{pid}/{name}", "rb") as f:
            return f.read()
    except OSError:
        return None


def _pid_ns(pid: int, which: str = "pid") -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/{which}")
    except OSError:
        return None


def _launcher_runtime(argv: list[str]) -> str | None:
    """The runtime folder of a `python -m autograder.sandbox CONNECTION_FILE` not yet exec'd."""
    if len(argv) < 4 or argv[1:3] != ["-m", "autograder.sandbox"]:
        return None
    import json
    try:
        ip = json.loads(Path(argv[3]).read_text()).get("ip", "")
    except (OSError, ValueError, AttributeError):
        return ""  # a launcher all the same, of no runtime we can tell
    return str(Path(ip).parent) if ip else ""


def _describe(pid: int, argv: list[str]) -> str:
    words = ["<stage2 script>" if "\n" in a else a for a in argv]
    line = shlex.join(words) if words else "?"
    return f"{pid} {line if len(line) <= 300 else line[:297] + '...'}"


def _scan(runtime: Path | str | None = None) -> dict[int, str]:
    """{pid: description} of the live processes of the sandboxes under `runtime`
    (a folder from `new_runtime_dir`; None: every sandbox on this machine)."""
    prefix = str(runtime or RUNTIME_ROOT).rstrip("/") + "/"
    me, own_ns = os.getpid(), _pid_ns(os.getpid())
    procs: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        pid = int(entry)
        stat = _read_proc(pid, "stat")
        if stat is None or stat.rpartition(b")")[2].split()[:1] in ([b"Z"], [b"X"]):
            continue  # gone, or a zombie (no memory; its parent reaps it)
        raw = _read_proc(pid, "cmdline") or b""
        procs[pid] = [a.decode(errors="replace") for a in raw.split(b"\0")[:-1]]
    marked = set()
    for pid, argv in procs.items():
        # unshare, sh, setpriv, prlimit and the kernel all carry the kernel's argv, whose
        # connection file lies in the runtime folder; a launcher that has not exec'd yet
        # carries the connection file that names it
        if "ipykernel_launcher" in argv and any(a.startswith(prefix) for a in argv):
            marked.add(pid)
        else:
            launcher = _launcher_runtime(argv)
            if launcher is not None and (runtime is None or (launcher + "/").startswith(prefix)):
                marked.add(pid)
    # every process inside those PID namespaces belongs to the sandbox too, whatever its command
    # line (a submission's children; a kernel that rewrote its own): unshare names the namespace
    # of its children, which nothing inside can change
    namespaces = {_pid_ns(pid, which) for pid in marked for which in ("pid", "pid_for_children")}
    namespaces -= {own_ns, None}
    found = marked | {pid for pid in procs if _pid_ns(pid) in namespaces}
    return {pid: _describe(pid, procs[pid]) for pid in sorted(found) if pid in procs}


def leftover_processes(runtime: Path | str | None = None) -> list[str]:
    """The sandboxed kernels' processes still alive, as "pid cmdline": those of the runtime
    folder `runtime` (from `new_runtime_dir`), or of every sandbox on this machine."""
    return list(_scan(runtime).values())


def kill_leftovers(runtime: Path | str | None = None, timeout: float = 10.0) -> list[str]:
    """SIGKILL what `leftover_processes(runtime)` lists, until nothing is left (or `timeout`
    seconds pass); return what was killed. A last resort: kernels end with their manager."""
    import time
    killed: dict[int, str] = {}
    deadline = time.monotonic() + timeout
    while True:
        found = _scan(runtime)
        if not found or time.monotonic() > deadline:
            break
        # pidfds, then a second look: a pid that died and was reused between the two is not hit
        handles = {}
        for pid in found:
            try:
                handles[pid] = os.pidfd_open(pid)
            except OSError:
                pass
        try:
            confirmed = _scan(runtime)
            for pid, fd in handles.items():
                if pid in confirmed:
                    try:
                        signal.pidfd_send_signal(fd, signal.SIGKILL)
                        killed.setdefault(pid, confirmed[pid])
                    except OSError:
                        pass
        finally:
            for fd in handles.values():
                os.close(fd)
        time.sleep(0.05)
    return list(killed.values())


def main(argv: list[str]) -> None:
    # Die with nbgrader: the parent-death signal outlives the exec into unshare, whose
    # --kill-child passes it on to the namespace's init (see "Process tree" above).
    parent = os.getppid()
    _die_with_parent()
    if os.getppid() != parent:  # nbgrader died before the prctl: no one would ever stop this kernel
        sys.exit("the course sandbox's parent died while it started")
    # With the IPC transport the connection's "ip" is the path prefix of the kernel's sockets,
    # in a runtime folder made by `new_runtime_dir`; the connection file goes there too, since
    # the sandbox gets its own /tmp.
    import json
    info = json.loads(Path(argv[0]).read_text())
    if info.get("transport") != "ipc" or not Path(info["ip"]).is_absolute():
        sys.exit("the course sandbox needs KernelManager.transport='ipc' and an absolute KernelManager.ip")
    runtime = Path(info["ip"]).parent
    connection_file = runtime / "connection.json"
    shutil.copy(argv[0], connection_file)
    kernel = [sys.executable, "-m", "ipykernel_launcher", "-f", str(connection_file),
              f"--IPKernelApp.exec_lines=import threading; threading.stack_size({THREAD_STACK_BYTES}); del threading",
              f"--IPKernelApp.exec_lines={grader.STARTUP}"]
    # a handle on the reference kernels, opened before the sandbox hides their folder: the
    # grader's startup line imports them through it, then closes it, before any learner code
    references = os.open(config.ROOT / REFERENCES_DIR, os.O_RDONLY | os.O_DIRECTORY)
    os.set_inheritable(references, True)
    # nbgrader starts the kernel in the submission's folder: stage its data files (not the
    # notebooks) next to the connection file, where the sandbox can still see them
    shutil.copytree(os.getcwd(), runtime / "work", ignore=shutil.ignore_patterns("*.ipynb"), dirs_exist_ok=True)
    _join_pids_cgroup()
    on_gpu = Path("/dev/nvidiactl").exists()
    env = dict(os.environ,
               SANDBOX_RUNTIME=str(runtime),
               SANDBOX_RUNTIME_ROOT=str(RUNTIME_ROOT),
               SANDBOX_HIDE=" ".join(hidden_paths()),
               SANDBOX_KEEP=" ".join(kept_under_tmp()),
               SANDBOX_DEVICES=" ".join(p.name for p in Path("/dev").glob("nvidia*") if p.is_char_device()),
               SANDBOX_TMP_SIZE=TMP_SIZE,
               SANDBOX_FSIZE=str(MAX_FILE_BYTES),
               SANDBOX_AS="" if on_gpu else f"--as={MAX_ADDRESS_SPACE}",
               COURSE_REFERENCE_FD=str(references),
               COURSE_LAB=os.environ.get("COURSE_LAB", Path.cwd().name))  # nbgrader runs it in the lab's folder
    cmd = ["unshare", "--mount", "--net", "--pid", "--fork", "--kill-child=SIGKILL", "--mount-proc",
           "sh", "-c", STAGE2, "sandbox", *kernel]
    os.execvpe(cmd[0], cmd, env)


if __name__ == "__main__":
    main(sys.argv[1:])
