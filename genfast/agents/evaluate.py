"""Judging an agent's episodes, and reflection through memory.

An episode succeeds when the loop ends with an answer equal to the task's (compared as numbers
when both parse). A failed episode gets one kind:

- wrong_answer:     it answered, wrongly;
- malformed:        it ran out of steps and its last output was not a valid action;
- tool_error:       it ran out of steps and its last tool call failed (error, timeout, bad result);
- budget_exhausted: it ran out of steps otherwise (kept calling tools without answering).

Measuring a policy over many tasks (success rate, steps, failures by kind) is lab 06's
`evaluate_agent`; the reflection experiment runs on the `evaluate_agent` it is given.
"""
from __future__ import annotations

from typing import Callable

from .loop import Trajectory
from .tools import Tool, Toolbox

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


def reflect(traj: Trajectory, failure: str, rich: bool = True) -> str:
    """The note written to memory after a failed attempt: an error log with a lesson, or a bare score."""
    if not rich:
        return f"task {traj.goal}: reward 0"
    used = sorted({s.action.tool for s in traj.steps if s.action.kind == "call"})
    how = f"called {', '.join(used)}" if used else "answered directly without a tool"
    return (f"task {traj.goal}: {how}, answer {traj.answer} judged wrong ({failure}). "
            f"lesson: digits guessed by the model are unreliable; use the calculator.")


def reflection_experiment(evaluate_agent: Callable, memory, model, tok, task_list, calculator: Tool,
                          rich: bool = True, max_steps: int = 4) -> dict:
    """Attempt 1 with no tool hint in the prompt; failures are reflected into `memory` (empty, a
    `retrieval.Memory`); attempt 2 reads memory (top-1 over the notes, query = the goal) and shows
    the calculator when the retrieved note carries that lesson. Both attempts are run with
    `evaluate_agent(policy, task_list, toolbox, max_steps)`; returns their success rates and the memory.

    The result is fixed by construction, not measured: the loop (not the model) shows the
    calculator exactly when the retrieved note contains "use the calculator". Every rich note
    does and no scalar note can, so with rich=False the second attempt repeats the first exactly,
    and with rich=True it is the model's success rate with its calculator on the tasks whose
    retrieval returns a note (all of them once memory holds one). It demonstrates the mechanism
    (write, retrieve, act); the only measured quantities are the success rates with and without
    the calculator (tests/test_lab06.py checks both identities)."""
    from .policies import TinyModelPolicy
    box = Toolbox.of(calculator)
    first = evaluate_agent(TinyModelPolicy(model, tok, offer_tools=lambda g: False), task_list, box, max_steps)
    for task, traj in zip(task_list, first["trajectories"]):
        kind = failure_kind(traj, task.answer)
        if kind:
            memory.write(reflect(traj, kind, rich), goal=task.goal)

    def recall(goal: str) -> bool:
        return any("use the calculator" in note for note, _, _ in memory.read(goal, k=1))

    second = evaluate_agent(TinyModelPolicy(model, tok, offer_tools=recall), task_list, box, max_steps)
    return {"first": first["success_rate"], "second": second["success_rate"],
            "first_results": first, "second_results": second, "memory": memory}
