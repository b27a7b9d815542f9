"""nbgrader commands run in processes forked from a preloaded server (autograder.nbrunner):
the same results as `python -m nbgrader`, the environment given and nothing else, a timeout that
kills the command and everything it started, and a server reused from one command to the next."""
import os
import subprocess
import sys
import time

import pytest

from autograder import config, nbrunner


def test_a_command_runs_with_its_own_environment_and_output():
    env = dict(os.environ, COURSE_NBRUNNER_PROBE="42")
    proc = nbrunner.run(["--version"], env=env, cwd=config.ROOT)
    direct = subprocess.run([sys.executable, "-m", "nbgrader", "--version"], cwd=config.ROOT,
                            capture_output=True, text=True)
    assert proc.returncode == 0 == direct.returncode
    assert proc.stdout.strip() == direct.stdout.strip() and proc.stdout.strip()


def test_a_failing_command_reports_its_exit_status_and_error():
    proc = nbrunner.run(["autograde", "no_such_lab", "--student", "nobody"], env=dict(os.environ), cwd=config.ROOT)
    assert proc.returncode != 0
    assert "ERROR" in proc.stdout + proc.stderr


def test_the_child_sees_exactly_the_environment_given(tmp_path):
    # nbgrader's config file is Python: a config that records the environment it runs in
    (tmp_path / "nbgrader_config.py").write_text(
        "import json, os\nopen('env.json', 'w').write(json.dumps(dict(os.environ)))\n")
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]])  # nbgrader runs `alembic`
    env = {"PATH": path, "COURSE_NBRUNNER_PROBE": "only-me"}
    proc = nbrunner.run(["db", "student", "list"], env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    import json
    seen = json.loads((tmp_path / "env.json").read_text())
    assert seen["COURSE_NBRUNNER_PROBE"] == "only-me"
    assert set(seen) - set(env) <= {"PWD", "JPY_SESSION_NAME"}, set(seen) - set(env)


def test_a_timeout_kills_the_command_and_the_server_goes_on(tmp_path):
    (tmp_path / "nbgrader_config.py").write_text("import time\ntime.sleep(600)\n")  # a command that never ends
    start = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        nbrunner.run(["db", "student", "list"], env=dict(os.environ), cwd=tmp_path, timeout=3)
    assert time.monotonic() - start < 30
    leftover = subprocess.run(["pgrep", "-f", "time.sleep(600)"], capture_output=True, text=True).stdout
    assert not leftover.strip()
    assert nbrunner.run(["--version"], env=dict(os.environ), cwd=config.ROOT).returncode == 0


def test_the_servers_warm_up_renders_a_feedback_page():
    # the server only warns when its warm-up fails (grading is then slower, not wrong): this is
    # where a change in nbgrader's feedback template or nbconvert shows up
    nbrunner._warm_up()
