"""The reference evaluation (lab 06's graded `evaluate_agent`): success rate, steps, failures by
kind over a task list, with the reference loop; and the reflection experiment on it.

What an episode's outcome means (same_answer, failure_kind, FAILURE_KINDS) and the reflection
experiment itself are the learner's `genfast.agents.evaluate`; see its docstring.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from genfast.agents import evaluate as _evaluate
from genfast.agents.evaluate import FAILURE_KINDS, failure_kind, reflect, same_answer  # noqa: F401

from .loop import Trajectory, run_agent
from .retrieval import Memory
from .tools import Toolbox, calculator_tool


@dataclass
class Result:
    goal: str
    expected: str
    trajectory: Trajectory
    failure: str | None

    @property
    def success(self) -> bool:
        return self.failure is None


def run_tasks(policy, task_list, tools: bool = True, max_steps: int = 4, toolbox: Toolbox | None = None) -> list[Result]:
    """Run every task; with tools=False the toolbox is empty (the model must answer directly)."""
    box = toolbox if toolbox is not None else (Toolbox.of(calculator_tool()) if tools else Toolbox())
    out = []
    for t in task_list:
        traj = run_agent(t.goal, policy, box, max_steps=max_steps)
        out.append(Result(t.goal, t.answer, traj, failure_kind(traj, t.answer)))
    return out


def summarize(results: list[Result]) -> dict:
    n = max(1, len(results))
    return {"success_rate": sum(r.success for r in results) / n,
            "avg_steps": sum(len(r.trajectory.steps) for r in results) / n,
            "failures": dict(Counter(r.failure for r in results if r.failure))}


def evaluate_agent(policy, task_list, toolbox: Toolbox, max_steps: int = 4) -> dict:
    """The notebook's evaluate_agent: summarize(run_tasks(...)) and the trajectories."""
    results = run_tasks(policy, task_list, toolbox=toolbox, max_steps=max_steps)
    return {**summarize(results), "trajectories": [r.trajectory for r in results]}


def reflection_experiment(model, tok, task_list, rich: bool = True, max_steps: int = 4) -> dict:
    """genfast's reflection experiment with the reference evaluation, memory and calculator (its
    result is fixed by construction: see genfast.agents.evaluate.reflection_experiment)."""
    return _evaluate.reflection_experiment(evaluate_agent, Memory(), model, tok, task_list, calculator_tool(),
                                           rich=rich, max_steps=max_steps)
