"""nbgrader configuration mapped onto the course layout.

solutions/ is nbgrader's source folder, labs/ its release folder; everything a grading
run writes (submissions, autograded copies, feedback, the gradebook database, the CSV)
goes under one git-ignored grading folder, ./grading unless COURSE_GRADING_DIR says else.
The repository's nbgrader_config.py calls `apply`, so the `nbgrader` command, JupyterLab's
formgrader and `python -m autograder` all see the same settings.
"""
import json
import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE_DIR = "solutions"
RELEASE_DIR = "labs"
COURSE_ID = "llm-systems"
CELL_TIMEOUT_S = 60  # per cell; a hanging cell is interrupted and scores 0, the rest still runs
IOPUB_TIMEOUT_S = 15  # how long a cell's last outputs may lag its reply (an interrupt under load)


def grading_dir() -> Path:
    return Path(os.environ.get("COURSE_GRADING_DIR", ROOT / "grading")).resolve()


def release_dir() -> Path:
    """labs/ (COURSE_RELEASE_DIR releases elsewhere: the tests compare a fresh release with labs/)."""
    return ROOT / os.environ.get("COURSE_RELEASE_DIR", RELEASE_DIR)


def _limit_for_cells_using(names: list[str], seconds: int, default: int):
    """nbclient's per-cell timeout: `seconds` for a cell whose code uses one of `names`, else `default`."""
    uses = re.compile(r"\b(?:" + "|".join(re.escape(n) for n in names) + r")\b")
    return lambda cell: seconds if uses.search(cell.source) else default


def apply(c) -> None:
    """Fill a traitlets config `c` (as in nbgrader_config.py) with the course settings."""
    grading = grading_dir()
    c.CourseDirectory.root = str(ROOT)
    c.CourseDirectory.course_id = COURSE_ID
    c.CourseDirectory.source_directory = SOURCE_DIR
    # Tests release into a scratch folder to compare with the committed labs/.
    c.CourseDirectory.release_directory = str(release_dir())
    c.CourseDirectory.submitted_directory = str(grading / "submitted")
    c.CourseDirectory.autograded_directory = str(grading / "autograded")
    c.CourseDirectory.feedback_directory = str(grading / "feedback")
    c.CourseDirectory.db_url = f"sqlite:///{grading / 'gradebook.db'}"
    c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback"]
    c.Execute.timeout = int(os.environ.get("COURSE_CELL_TIMEOUT", CELL_TIMEOUT_S))
    limit = c.Execute.timeout
    sample_limit = os.environ.get("COURSE_SAMPLE_CELL_LIMIT")  # a course sample's own (samples.cell_limit)
    if sample_limit:
        short = json.loads(sample_limit)
        c.Execute.timeout_func = _limit_for_cells_using(short["names"], short["seconds"], c.Execute.timeout)
        limit = short["seconds"]
    c.Execute.interrupt_on_timeout = True
    # After a cut (or any reply) nbclient waits for the kernel's "idle" on IOPub. On a loaded
    # machine an interrupted kernel can take longer than nbclient's 4 s to get there, and
    # nbgrader's default then fails the whole notebook (graded as the unfilled lab): wait longer,
    # then go on to the next cell, which the kernel runs once it is idle.
    c.Execute.iopub_timeout = IOPUB_TIMEOUT_S
    c.Execute.raise_on_iopub_timeout = False
    # The outputs are all in once the last cell replies; a graceful shutdown only waits for the
    # kernel's own exit (torch's teardown, about a second) before the same SIGKILL.
    c.Execute.shutdown_kernel = "immediate"
    c.Execute.error_on_timeout = {
        "ename": "CellTimeoutError",
        "evalue": f"stopped after {limit} s",
        "traceback": [f"CellTimeoutError: this cell ran longer than {limit} s and was stopped, "
                      "so it scores 0. Look for a loop that never ends (for example a while loop whose "
                      "condition never changes) in the code this cell calls."],
    }
    if os.environ.get("COURSE_PROFILE") == "1":  # `stress` reads where a submission's seconds go
        c.Application.log_level = "DEBUG"
        c.Application.log_format = "%(asctime)s.%(msecs)03d [%(name)s | %(levelname)s] %(message)s"
        c.Application.log_datefmt = "%Y-%m-%d %H:%M:%S"
    c.Autograde.create_student = True
    # nbgrader's own list, after the course's two skips: the visible checks that the hidden blocks
    # re-run, and the instructor's demo cells that nothing later needs
    c.Autograde.autograde_preprocessors = [
        "autograder.visible_checks.SkipVisibleChecks", "autograder.demo_cells.SkipDemoCells",
        "nbgrader.preprocessors.Execute",
        "nbgrader.preprocessors.IgnorePattern", "nbconvert.preprocessors.ClearMetadataPreprocessor",
        "nbgrader.preprocessors.LimitOutput", "nbgrader.preprocessors.SaveAutoGrades",
        "nbgrader.preprocessors.AssignLatePenalties", "nbgrader.preprocessors.CheckCellMetadata"]
    sandbox_runtime = os.environ.get("COURSE_SANDBOX_RUNTIME")
    if sandbox_runtime:  # set by autograder.grading when it grades in the sandbox
        c.Execute.kernel_name = "course-sandbox"
        c.KernelManager.transport = "ipc"  # the sandbox has no network, not even loopback
        c.KernelManager.ip = str(Path(sandbox_runtime) / "kernel")
    elif os.environ.get("COURSE_GRADER_KERNEL"):  # no sandbox here: still bind the references first
        c.Execute.kernel_name = os.environ["COURSE_GRADER_KERNEL"]
    # feedback shows each test cell's outcome and message, not the hidden tests' source
    c.GenerateFeedback.preprocessors = ["nbgrader.preprocessors.GetGrades",
                                        "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
                                        "autograder.feedback.HideHiddenTests"]
    c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
