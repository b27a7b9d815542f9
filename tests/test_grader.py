"""The hidden-test seam: every lab binds at kernel start, and what it binds cannot be redirected."""
import subprocess
import sys

import pytest

from autograder import config, grading


@pytest.mark.parametrize("lab", grading.all_labs())
def test_every_lab_binds_its_references_and_private_checks(lab):
    code = ("import autograder.grader as g; g.bind(); assert not g._bind_error, g._bind_error; "
            "print(sorted(g._references), sorted(g._private))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=config.ROOT, capture_output=True, text=True,
                          env={**__import__("os").environ, "COURSE_LAB": lab}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"genfast.labs.{lab}" in proc.stdout


def test_snapshots_and_private_copies_ignore_what_a_learner_rebinds():
    import genfast.checks
    import kernels.vector_add
    from autograder import grader
    ref = grader.reference("kernels.vector_add")
    private = grader.private("genfast.checks")
    saved_add, saved_tol = kernels.vector_add.torch_add, dict(genfast.checks.TOLERANCES)
    try:
        kernels.vector_add.torch_add = lambda x, y: None
        genfast.checks.TOLERANCES.update({k: (1e9, 1e9) for k in genfast.checks.TOLERANCES})
        assert ref.torch_add is saved_add
        assert private.TOLERANCES == saved_tol and private is not genfast.checks
        with pytest.raises(AttributeError):
            ref.torch_add = None
    finally:
        kernels.vector_add.torch_add = saved_add
        genfast.checks.TOLERANCES.update(saved_tol)
