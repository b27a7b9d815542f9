"""Read scores back from nbgrader's gradebook and print the class table.

Test cells whose grade id starts with `speed_` hold speed points; they are reported
apart from correctness, and marked "GPU only" when grading ran without a GPU.
"""
from __future__ import annotations

from dataclasses import dataclass

from nbgrader.api import Gradebook, MissingEntry

from genfast import runtime

from . import config

SPEED_PREFIX = "speed_"


@dataclass
class LabScore:
    correctness: float = 0.0
    correctness_max: float = 0.0
    speed: float = 0.0
    speed_max: float = 0.0
    graded: bool = False

    @property
    def total(self) -> float:
        return self.correctness + self.speed


def db_path():
    return config.grading_dir() / "gradebook.db"


def _db_url() -> str:
    return f"sqlite:///{db_path()}"


def add_students(students) -> None:
    """Put these students in the gradebook, before a batch grades them: two nbgrader autogrades
    of a new student at once (two of their labs, on two workers) would each insert the student,
    and the second would fail on the gradebook's unique key and be graded as the unfilled lab.
    (Releasing a lab makes the gradebook; without one there is no lab to grade yet.)"""
    if not db_path().exists():
        return
    with Gradebook(_db_url(), config.COURSE_ID) as gb:
        for student in sorted(set(students)):
            gb.update_or_create_student(student)


def scores() -> dict[tuple[str, str], LabScore]:
    """{(student, lab): LabScore} for every student and lab in the gradebook."""
    result = {}
    with Gradebook(_db_url(), config.COURSE_ID) as gb:
        for assignment in gb.assignments:
            for student in gb.students:
                score = LabScore()
                try:
                    submission = gb.find_submission(assignment.name, student.id)
                except MissingEntry:
                    continue
                score.graded = True
                for notebook in submission.notebooks:
                    for grade in notebook.grades:
                        points = grade.score or 0.0
                        if grade.name.startswith(SPEED_PREFIX):
                            score.speed += points
                            score.speed_max += grade.max_score
                        else:
                            score.correctness += points
                            score.correctness_max += grade.max_score
                result[(student.id, assignment.name)] = score
    return result


def _cell(score: LabScore | None, gpu: bool) -> str:
    if score is None or not score.graded:
        return "not graded"
    text = f"{score.correctness:g} / {score.correctness_max:g}"
    if score.speed_max:
        text += f"  speed {score.speed:g}/{score.speed_max:g}" if gpu else "  speed: GPU only"
    return text


def table(all_scores: dict | None = None, gpu: bool | None = None) -> str:
    all_scores = scores() if all_scores is None else all_scores
    gpu = runtime.on_gpu() if gpu is None else gpu
    students = sorted({s for s, _ in all_scores})
    labs = sorted({lab for _, lab in all_scores})
    rows = [["student", *labs]] + [[s, *(_cell(all_scores.get((s, lab)), gpu) for lab in labs)] for s in students]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
