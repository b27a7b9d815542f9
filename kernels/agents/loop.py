"""The reference observe-think-act loop and action parser (lab 06's graded `parse_action`,
argument checking and `run_agent`); the records they fill in are `genfast.agents.loop`'s.

    history = []
    for step in range(max_steps):
        text   = policy(goal, history, toolbox)        # think: the model reads goal + history
        action = parse_action(text, toolbox)           # a tool call, a final answer, or malformed
        if answer: stop
        observation = toolbox.execute(...)   or   the parse error, told back to the model
        history.append(step)                            # observe
    budget exhausted: stop without an answer

A model's output is untrusted text. `parse_action` accepts exactly two JSON shapes,

    {"tool": NAME, "arguments": {...}}       validated against the tool's JSON schema
    {"answer": TEXT}

optionally after some free text (the "thought"); everything else is *malformed*, and the loop
tells the model why in the observation instead of crashing or guessing what it meant.
"""
from __future__ import annotations

import json

from genfast.agents.loop import Action, Step, Trajectory  # noqa: F401
from genfast.agents.tools import Toolbox

_JSON_TYPES = {"string": str, "integer": int, "number": (int, float), "boolean": bool, "object": dict, "array": list}


def check_arguments(arguments: dict, parameters: dict) -> str | None:
    """None if `arguments` fit the JSON schema `parameters` (required, types, no unknown), else why."""
    props = parameters.get("properties", {})
    for name in parameters.get("required", []):
        if name not in arguments:
            return f"missing required argument {name!r}"
    for name, value in arguments.items():
        if name not in props:
            return f"unknown argument {name!r} (expected {sorted(props)})"
        want = props[name].get("type")
        if want is None:
            continue
        ok = isinstance(value, _JSON_TYPES[want]) and not (want in ("integer", "number") and isinstance(value, bool))
        if not ok:
            return f"argument {name!r} must be of type {want}, got {type(value).__name__}"
    return None


def parse_action(text: str, toolbox: Toolbox) -> Action:
    """The action in a model's output (see the module docstring)."""
    if not isinstance(text, str):
        return Action("malformed", error=f"the model returned {type(text).__name__}, not text")
    start = text.find("{")
    if start < 0:
        return Action("malformed", error="no JSON object found; reply with {\"tool\": ..., \"arguments\": {...}} "
                                         "or {\"answer\": ...}")
    thought = text[:start].strip()
    try:
        obj, _ = json.JSONDecoder().raw_decode(text[start:])
    except json.JSONDecodeError as e:
        return Action("malformed", error=f"invalid JSON: {e.msg} at character {e.pos}", thought=thought)
    if not isinstance(obj, dict):
        return Action("malformed", error="the JSON must be an object", thought=thought)
    if "answer" in obj and "tool" not in obj:
        return Action("answer", answer=str(obj["answer"]), thought=thought)
    if "tool" not in obj:
        return Action("malformed", error="the object has neither 'tool' nor 'answer'", thought=thought)
    name, args = obj["tool"], obj.get("arguments", {})
    if not isinstance(name, str) or name not in toolbox.tools:
        return Action("malformed", error=f"unknown tool {name!r}; available: {sorted(toolbox.tools)}", thought=thought)
    if not isinstance(args, dict):
        return Action("malformed", error="'arguments' must be an object", thought=thought)
    problem = check_arguments(args, toolbox.tools[name].parameters)
    if problem:
        return Action("malformed", tool=name, arguments=args, error=f"bad call to {name}: {problem}", thought=thought)
    return Action("call", tool=name, arguments=args, thought=thought)


def run_agent(goal: str, policy, toolbox: Toolbox, max_steps: int = 4) -> Trajectory:
    """Run the loop: at most max_steps model calls; every outcome of a step is recorded."""
    traj = Trajectory(goal)
    for _ in range(max_steps):
        output = policy(goal, traj.history(), toolbox)
        action = parse_action(output, toolbox)
        step = Step(output if isinstance(output, str) else repr(output), action)
        traj.steps.append(step)
        if action.kind == "answer":
            traj.answer, traj.status = action.answer, "answered"
            return traj
        if action.kind == "malformed":
            step.observation, step.error_kind = f"error: {action.error}", "malformed"
        else:
            step.observation, step.error_kind = toolbox.execute(action.tool, action.arguments)
    traj.status = "budget_exhausted"
    return traj
