"""Real Unix users for the classroom tests (test_exchange.py, test_hub.py): made here, removed after.

How the users reach Python. The course's Python (and, in CI, the clone) may live under /root,
mode 700. Rather than opening /root to everyone, each user's command runs in a mount namespace
of its own (`unshare --mount`, then `setpriv` to the user) where the folders that others cannot
traverse are replaced by empty tmpfs mounts into which exactly the Python installation, the venv
and the course's hub settings (autograder/hub/, no answers there) are bind-mounted back, and, for
the instructor, the course. Students never see the course folder: solutions/ and the hidden tests
are not even mounted for them. Nothing on the host changes mode, and it all ends with the
processes. A hub runs as root in such a namespace, so the servers it starts as each user see the
same.
"""
import contextlib
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from autograder import config

ROOT = config.ROOT
HUB_SETTINGS = ROOT / "autograder" / "hub"
COMMAND_TIMEOUT = 300

IN_NAMESPACE = r"""
set -eu
mount --make-rprivate /
i=0
for p in $SHOW; do i=$((i+1)); mkdir -p "$STASH/$i"; mount --bind "$p" "$STASH/$i"; done
for h in $HIDE; do mount -t tmpfs -o mode=755,size=1m tmpfs "$h"; done
i=0
for p in $SHOW; do i=$((i+1)); mkdir -p "$p"; mount --bind "$STASH/$i" "$p"; done
if [ -z "$AS_UID" ]; then exec "$@"; fi
exec setpriv --reuid="$AS_UID" --regid="$AS_GID" --init-groups -- "$@"
"""


def _closed_ancestors(path: Path) -> list[Path]:
    """The ancestors of `path` that other users cannot traverse (no o+x)."""
    return [p for p in reversed(path.parents) if not os.stat(p).st_mode & 0o001]


class Users:
    def __init__(self, base: Path):
        self.base = base
        self.made: list[str] = []
        self.passwords: dict[str, str] = {}
        self.python = Path(sys.prefix).resolve()
        self.base_python = Path(sys.base_prefix).resolve()

    def add(self, role: str) -> str:
        """A new user `<role>-<random>` with a home of its own (0700) and a random password."""
        name = f"{role}-{secrets.token_hex(3)}"
        home = self.base / "home" / name
        subprocess.run(["useradd", "--no-create-home", "--home-dir", str(home), "--shell", "/bin/sh",
                        "--user-group", name], check=True, capture_output=True)
        self.made.append(name)
        self.passwords[name] = secrets.token_urlsafe(12)
        subprocess.run(["chpasswd"], input=f"{name}:{self.passwords[name]}\n", text=True, check=True,
                       capture_output=True)
        home.mkdir(parents=True)
        shutil.chown(home, name, name)
        home.chmod(0o700)  # a home of one's own, as on a shared server
        return name

    def namespaced(self, user: str | None, argv, env: dict, sees_course: bool) -> tuple[list, dict, Path]:
        """The command line and environment that run `argv` as `user` (as root if None) in a mount
        namespace showing the Python environment (and the course, if `sees_course`); and the
        stash folder to remove once the namespace is made."""
        show = [self.base_python, self.python, HUB_SETTINGS] + ([ROOT] if sees_course else [])
        hide = sorted({a for p in show for a in _closed_ancestors(p)[:1]})
        if not sees_course and not any(ROOT.is_relative_to(h) for h in hide):
            hide.append(ROOT)  # students: the course folder is not there at all
        stash = Path(tempfile.mkdtemp(prefix="stash-", dir=self.base))
        stash.chmod(0o700)
        entry = pwd.getpwnam(user) if user else None
        full_env = dict(PATH=f"{self.python}/bin:/usr/bin:/bin", LANG="C.UTF-8", PYTHONDONTWRITEBYTECODE="1",
                        # the hub's settings for every user: the course id, the exchange's root
                        JUPYTER_CONFIG_PATH=str(HUB_SETTINGS / "common"),
                        COURSE_EXCHANGE_ROOT=str(self.base / "exchange"),
                        SHOW=" ".join(map(str, show)), HIDE=" ".join(map(str, hide)), STASH=str(stash),
                        AS_UID=str(entry.pw_uid) if entry else "", AS_GID=str(entry.pw_gid) if entry else "")
        if entry:
            full_env.update(HOME=entry.pw_dir, USER=user, LOGNAME=user)
        full_env.update(env or {})
        return ["unshare", "--mount", "sh", "-c", IN_NAMESPACE, "in-namespace", *map(str, argv)], full_env, stash

    def run(self, user: str, *argv: str, cwd: Path | None = None, env: dict | None = None,
            sees_course: bool = False, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        """Run `argv` as `user`, to the end, in its namespace (see `namespaced`)."""
        command, full_env, stash = self.namespaced(user, argv, env or {}, sees_course)
        try:
            proc = subprocess.run(command, cwd=cwd or pwd.getpwnam(user).pw_dir, env=full_env, input=input,
                                  capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
        finally:
            shutil.rmtree(stash, ignore_errors=True)
        if check:
            assert proc.returncode == 0, f"as {user}: {' '.join(argv)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        return proc

    def nbgrader(self, user: str, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.run(user, str(self.python / "bin" / "python"), "-m", "nbgrader", *args, **kw)

    def remove(self) -> None:
        for name in self.made:
            subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True)
            subprocess.run(["userdel", name], capture_output=True)


@contextlib.contextmanager
def classroom(prefix: str):
    """An instructor and two students, an exchange as nbgrader documents it, the instructor's
    grading and release folders; everything is removed at the end."""
    if os.geteuid() != 0 or not all(shutil.which(t) for t in ("useradd", "userdel", "chpasswd", "unshare", "setpriv")):
        pytest.skip("making Unix users needs root and shadow/util-linux tools")
    base = Path(tempfile.mkdtemp(prefix=prefix))
    base.chmod(0o755)
    users = Users(base)
    try:
        instructor, alice, bob = users.add("ta"), users.add("alice"), users.add("bob")
        exchange = base / "exchange"
        exchange.mkdir()
        exchange.chmod(0o777)  # as nbgrader's docs set it up: everyone may create the course folder's entries
        grading_dir, release = base / "grading", base / "release"
        for folder in (grading_dir, release):
            folder.mkdir()
            shutil.chown(folder, instructor, instructor)
        yield dict(base=base, users=users, instructor=instructor, alice=alice, bob=bob, exchange=exchange,
                   grading=grading_dir, release=release,
                   course_env=dict(COURSE_GRADING_DIR=str(grading_dir), COURSE_RELEASE_DIR=str(release)))
    finally:
        users.remove()
        shutil.rmtree(base, ignore_errors=True)
