"""A cell cut at its time limit costs that cell only, even when the kernel is slow to come back.

nbgrader's Execute stops a cell at its limit by interrupting the kernel, then waits for the
kernel to say it is idle. On a loaded machine that wait can run out, and with nbgrader's own
setting the whole notebook then fails (and is graded as the unfilled lab). These run nbgrader's
Execute with the course's settings on a plain kernel, with a cell that takes seconds to stop
once it is interrupted.
"""
import nbformat
import pytest
from nbclient.exceptions import CellTimeoutError
from nbformat.v4 import new_code_cell, new_notebook
from nbgrader.preprocessors import Execute
from traitlets.config import Config

from autograder import config

SLOW_TO_STOP = """\
import time
try:
    while True:
        pass
except KeyboardInterrupt:
    time.sleep({seconds})  # busy well past nbclient's wait for the kernel's idle message
    raise"""


def _run(lag_s: float, iopub_timeout_s: int, raise_on_iopub_timeout: bool | None = None):
    c = Config()
    config.apply(c)
    c.Execute.kernel_name = "python3"  # plain ipykernel: this tests nbclient's settings, not the sandbox
    c.Execute.timeout = 2
    c.Execute.timeout_func = None
    c.Execute.iopub_timeout = iopub_timeout_s
    if raise_on_iopub_timeout is not None:
        c.Execute.raise_on_iopub_timeout = raise_on_iopub_timeout
    nb = new_notebook(cells=[new_code_cell("answer = 6 * 7"),
                             new_code_cell(SLOW_TO_STOP.format(seconds=lag_s)),
                             new_code_cell("print(answer)")])
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb, _ = Execute(config=c).preprocess(nbformat.from_dict(nb), {"metadata": {"path": "."}})
    return nb


def test_a_cut_cell_whose_kernel_lags_costs_only_that_cell():
    nb = _run(lag_s=4, iopub_timeout_s=1)  # the lag outlasts the wait for the idle message
    cut = nb.cells[1].outputs
    assert any(o.get("ename") == "CellTimeoutError" for o in cut), cut
    assert "stopped" in "".join(cut[-1].get("traceback", [])), cut
    printed = "".join(o.get("text", "") for o in nb.cells[2].outputs)
    assert printed.strip() == "42", nb.cells[2].outputs  # the later cells still ran, in order


def test_nbgraders_own_setting_would_fail_the_whole_notebook():
    """Why the course changes it: the same run with nbgrader's default raises."""
    with pytest.raises(CellTimeoutError, match="IOPub"):
        _run(lag_s=4, iopub_timeout_s=1, raise_on_iopub_timeout=True)
