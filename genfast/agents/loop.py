"""The records of the observe-think-act loop: an action, a step, a trajectory.

Lab 06 writes the loop itself (`parse_action`, `run_agent`); these are what it fills in:

    traj = Trajectory(goal)
    for step in range(max_steps):
        output = policy(goal, traj.history(), toolbox)  # think: the model reads goal + history
        action = <parse output>                         # Action: a call, an answer, or malformed
        traj.steps.append(Step(output, action))
        answer: stop;  otherwise the step's observation (a tool result, or why it was rejected)
    no answer within the budget: traj.status = "budget_exhausted"

A model's output is untrusted text. Two JSON shapes are actions,

    {"tool": NAME, "arguments": {...}}       arguments checked against the tool's JSON schema
    {"answer": TEXT}

optionally after some free text (the "thought"); everything else is *malformed*, and the loop
tells the model why in the observation instead of crashing or guessing what it meant.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Action:
    kind: str                      # "call", "answer" or "malformed"
    tool: str | None = None
    arguments: dict = field(default_factory=dict)
    answer: str | None = None
    error: str | None = None       # why it is malformed
    thought: str = ""              # free text before the JSON


@dataclass
class Step:
    output: str                    # the model's raw text
    action: Action
    observation: str | None = None
    error_kind: str | None = None  # malformed, unknown_tool, tool_error, timeout, bad_result


@dataclass
class Trajectory:
    goal: str
    steps: list[Step] = field(default_factory=list)
    answer: str | None = None
    status: str = "running"        # "answered" or "budget_exhausted"

    def history(self) -> list[tuple[str, str]]:
        """(model output, observation) pairs of the finished steps, what a policy reads."""
        return [(s.output, s.observation) for s in self.steps if s.observation is not None]
