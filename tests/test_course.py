"""Lecture material: every module with a lab has a note and a demo, and every demo runs
headless top to bottom (widgets display, nothing waits for a click)."""
import json
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
MODULES = sorted(p for p in (ROOT / "course").iterdir() if p.is_dir())
TIMINGS = ROOT / "artifacts" / "demos"  # git-ignored: where a slow demo's time went


def _save_cell_times(name: str, nb, seconds: float) -> None:
    """Each code cell's start and reply times (nbclient records them), for a person to read when a
    demo that takes seconds takes minutes (CI saw two demos take 305 s once, and pass)."""
    cells = [dict(index=i, source=c.source[:80], **c.metadata.get("execution", {}))
             for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    TIMINGS.mkdir(parents=True, exist_ok=True)
    (TIMINGS / f"{name}.json").write_text(json.dumps(dict(seconds=seconds, cells=cells), indent=1))


def test_each_lab_has_its_course_module():
    from autograder import grading
    numbers = {p.name[:2] for p in MODULES}
    for lab in grading.all_labs():
        assert lab[3:5] in numbers, f"{lab}: add course/{lab[3:5]}_*/ with notes.md and demo.ipynb"


@pytest.mark.parametrize("module", MODULES, ids=lambda p: p.name)
def test_demo_runs_headless(module, tmp_path):
    assert (module / "notes.md").exists()
    nb = nbformat.read(module / "demo.ipynb", as_version=4)
    start = time.time()
    try:
        NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(module)}}).execute()
    finally:
        _save_cell_times(module.name, nb, time.time() - start)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors, [f"{e.ename}: {e.evalue}" for e in errors]
