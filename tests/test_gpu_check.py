"""`make gpu-check` on a machine without a GPU: it says what it would run and exits 0."""
import subprocess
import sys

import pytest

from autograder import config, gpu_check
from genfast import runtime


@pytest.mark.skipif(runtime.on_gpu(), reason="on a GPU the check really runs")
def test_without_a_gpu_it_prints_the_plan_and_exits_0():
    proc = subprocess.run([sys.executable, "-m", "autograder", "gpu-check"], cwd=config.ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for step in gpu_check.steps():
        assert step.title in proc.stdout


def test_every_step_names_things_that_exist():
    for step in gpu_check.steps():
        for arg in step.argv:
            if arg.startswith("tests/"):
                assert (config.ROOT / arg).exists(), arg
    assert sum(s.timeout_s for s in gpu_check.steps()) >= gpu_check.BUDGET_S  # the budget is what binds
    assert gpu_check.BUDGET_S < 600
