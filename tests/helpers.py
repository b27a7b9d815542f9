"""Small helpers shared by test modules (importable as `helpers`: pytest puts tests/ on sys.path)."""
import contextlib
import os
import socket


@contextlib.contextmanager
def course_env(**values):
    """Set environment variables (COURSE_GRADING_DIR, ...) for a block, then restore them; for
    module-scoped fixtures, where pytest's function-scoped monkeypatch cannot be used."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update({k: str(v) for k, v in values.items()})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def free_port() -> int:
    """A TCP port on localhost that nothing listens on now (for a server a test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
