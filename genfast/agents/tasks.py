"""Synthetic tool-use tasks (multi-digit arithmetic) and the tiny model's trace format.

A task is a goal string such as "347*29" with its exact answer "10063". A 0.8M-parameter
character model cannot multiply three-digit numbers in one pass, but it can learn to copy the
expression into a calculator call and copy the observation back: that gap is the point.

The tiny model sees one compact text per episode (at most `block_size` = 128 characters):

    T: calculator                                               only if tools are offered
    Q: 347*29                                                   the goal
    {"arguments":{"expression":"347*29"},"tool":"calculator"}   model output (a tool call)
    O: 10063                                                    the observation, written by the loop
    {"answer":"10063"}                                          model output (the final answer)

Without the `T:` line the model answers directly (it must guess). `render` builds that text from
a goal and a history; `trace` builds a whole correct episode for training.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass

OPS = "+-*"
OBS_CHARS = 48          # observations are cut to this many characters in the tiny model's prompt


@dataclass(frozen=True)
class Task:
    goal: str           # e.g. "347*29"
    answer: str         # e.g. "10063"

    @property
    def expression(self) -> str:
        return self.goal


def make_task(rng: random.Random) -> Task:
    """One arithmetic task: two 2-3 digit operands and one of + - *."""
    op = rng.choice(OPS)
    a, b = rng.randint(10, 999), rng.randint(10, 999)
    return Task(f"{a}{op}{b}", str(eval(f"{a}{op}{b}")))   # eval of two ints and an operator: safe


def task_set(n: int, seed: int, exclude: set[str] | None = None) -> list[Task]:
    """n distinct tasks from `seed`, none of whose goals is in `exclude`."""
    rng, out, seen = random.Random(seed), [], set(exclude or ())
    while len(out) < n:
        t = make_task(rng)
        if t.goal not in seen:
            seen.add(t.goal)
            out.append(t)
    return out


HELDOUT_SEED = 6006


def heldout_tasks(n: int = 40) -> list[Task]:
    """The held-out evaluation set (never seen in training: train.py excludes these goals)."""
    return task_set(n, HELDOUT_SEED)


# ----------------------------------------------------------------------------------------------
# the compact text format of the tiny model
# ----------------------------------------------------------------------------------------------
def call_json(tool: str, **arguments) -> str:
    # arguments first: the expression then sits close to the goal it copies (easier for a tiny model)
    return json.dumps({"arguments": arguments, "tool": tool}, separators=(",", ":"))


def answer_json(answer: str) -> str:
    return json.dumps({"answer": str(answer)}, separators=(",", ":"))


def render(goal: str, history: list[tuple[str, str]], tools: bool) -> str:
    """The tiny model's prompt: goal, tool line, then (model output, observation) pairs.

    `history` holds (action text the model emitted, observation text) pairs; the text ends where
    the model's next output line starts."""
    text = ("T: calculator\n" if tools else "") + f"Q: {goal}\n"
    for action, obs in history:
        text += action.strip().replace("\n", " ") + "\n" + "O: " + str(obs).replace("\n", " ")[:OBS_CHARS] + "\n"
    return text


def trace(task: Task, tools: bool) -> tuple[str, list[tuple[int, int]]]:
    """A correct episode as text, and the (start, end) character spans the model must produce."""
    spans = []
    text = render(task.goal, [], tools)
    if tools:
        call = call_json("calculator", expression=task.goal) + "\n"
        spans.append((len(text), len(text) + len(call)))
        text += call + "O: " + task.answer + "\n"
    out = answer_json(task.answer) + "\n"
    spans.append((len(text), len(text) + len(out)))
    return text + out, spans
