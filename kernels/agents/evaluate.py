"""Measuring an agent: success rate, steps, failures by kind; reflection through memory.

An episode succeeds when the loop ends with an answer equal to the task's (compared as numbers
when both parse). A failed episode gets one kind:

- wrong_answer:     it answered, wrongly;
- malformed:        it ran out of steps and its last output was not a valid action;
- tool_error:       it ran out of steps and its last tool call failed (error, timeout, bad result);
- budget_exhausted: it ran out of steps otherwise (kept calling tools without answering).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from .loop import Trajectory, run_agent
from .retrieval import Memory
from .tools import Toolbox, calculator_tool

FAILURE_KINDS = ("wrong_answer", "malformed", "tool_error", "budget_exhausted")


def same_answer(got, want) -> bool:
    if got is None:
        return False
    got, want = str(got).strip(), str(want).strip()
    try:
        return abs(float(got) - float(want)) <= 1e-9 * max(1.0, abs(float(want)))
    except ValueError:
        return got == want


def failure_kind(traj: Trajectory, expected) -> str | None:
    if traj.status == "answered":
        return None if same_answer(traj.answer, expected) else "wrong_answer"
    last = traj.steps[-1].error_kind if traj.steps else None
    if last == "malformed":
        return "malformed"
    if last is not None:
        return "tool_error"
    return "budget_exhausted"


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


def reflect(result: Result, rich: bool = True) -> str:
    """The note written to memory after a failed attempt: an error log with a lesson, or a bare score."""
    if not rich:
        return f"task {result.goal}: reward 0"
    steps = result.trajectory.steps
    used = sorted({s.action.tool for s in steps if s.action.kind == "call"})
    how = f"called {', '.join(used)}" if used else "answered directly without a tool"
    return (f"task {result.goal}: {how}, answer {result.trajectory.answer} judged wrong ({result.failure}). "
            f"lesson: digits guessed by the model are unreliable; use the calculator.")


def reflection_experiment(model, tok, task_list, rich: bool = True, max_steps: int = 4) -> dict:
    """Attempt 1 with no tool hint in the prompt; failures are reflected into memory; attempt 2
    reads memory (TF-IDF top-1 over the notes, query = the goal) and shows the calculator when the
    retrieved note carries that lesson. Returns success rates and the memory."""
    from .policies import TinyModelPolicy
    memory = Memory()
    box = Toolbox.of(calculator_tool())
    first = run_tasks(TinyModelPolicy(model, tok, offer_tools=lambda g: False), task_list, toolbox=box,
                      max_steps=max_steps)
    for r in first:
        if not r.success:
            memory.write(reflect(r, rich), goal=r.goal)

    def recall(goal: str) -> bool:
        return any("use the calculator" in note for note, _, _ in memory.read(goal, k=1))

    second = run_tasks(TinyModelPolicy(model, tok, offer_tools=recall), task_list, toolbox=box, max_steps=max_steps)
    n = max(1, len(task_list))
    return {"first": sum(r.success for r in first) / n, "second": sum(r.success for r in second) / n,
            "first_results": first, "second_results": second, "memory": memory}
