"""The learner package holds no answers and reaches nothing on the instructor side."""
import ast
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
GENFAST = ROOT / "genfast"


def _imports(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level:
            yield node.module or ""


@pytest.mark.parametrize("path", sorted(GENFAST.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_genfast_never_imports_the_instructor_side(path):
    bad = [m for m in _imports(path) if m.split(".")[0] in ("kernels", "autograder", "solutions")]
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}: the learner install must not need the instructor side"


def _same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal, up to the last bits of floating-point results: torch's CPU kernels take other paths
    on other processors (AVX-512, AMX), which moves a float32 attention output by a few ulps. A
    stale fixture (another generator, seed or shape) differs by far more than torch's defaults."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if not a.is_floating_point():
        return torch.equal(a, b)
    try:
        torch.testing.assert_close(a, b)
        return True
    except AssertionError:
        return False


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and _same_tensor(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and sorted(a) == sorted(b) and all(_same(a[k], b[k]) for k in a)
    return repr(a) == repr(b)


def test_saved_fixtures_match_a_fresh_build():
    from kernels import fixtures
    from genfast import fixtures as shipped
    for lab in fixtures.labs():
        fresh, saved = fixtures.build(lab), torch.load(shipped.path(lab), weights_only=True)
        assert fresh.keys() == saved.keys(), f"{lab}: rebuild with `python -m autograder fixtures {lab}`"
        for key in fresh:
            assert _same(fresh[key], saved[key]), \
                f"{lab}: fixture {key!r} is stale: run `python -m autograder fixtures {lab}`"
        assert shipped.path(lab).stat().st_size < 1_000_000, f"{lab}: fixtures over 1 MB"


def test_kernels_never_import_the_grading_machinery():
    """No import cycle: autograder may import kernels (for hidden tests), never the other way."""
    for path in sorted((ROOT / "kernels").rglob("*.py")):
        bad = [m for m in _imports(path) if m.split(".")[0] == "autograder"]
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


@pytest.mark.parametrize("student", ["reference", "buggy", "hangs"])
def test_every_sample_follows_the_code_policy(student):
    """The instructor's solutions and the honest samples pass the policy they are graded under."""
    from autograder import grading, samples
    from genfast import policy
    for lab in grading.all_labs():
        if student not in samples.students_for(lab):
            continue
        found = policy.check_notebook(samples.make_sample(lab, student), lab, grading.released_notebook(lab))
        assert not found, f"{lab}/{student}: " + "; ".join(f"{label}: {f}" for _, label, fs in found for f in fs)


def test_released_labs_name_neither_the_references_nor_the_grader():
    """No cell of a released lab imports or names the instructor side; its code cells do not even
    say `kernels` or `autograder` (the text may speak of a lab's kernels)."""
    import re
    from autograder import grading
    for lab in grading.all_labs():
        for cell in grading.released_notebook(lab).cells:
            assert not re.search(r"\b(from|import) kernels\b|\bkernels\.\w|GRADER", cell.source), \
                f"labs/{lab}: {cell.source[:200]}"
            if cell.cell_type == "code":
                assert not re.search(r"\bkernels\b|autograder", cell.source), f"labs/{lab}: {cell.source[:200]}"
