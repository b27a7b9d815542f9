"""Tools an agent may call: declared by a JSON schema, executed with a clear observation always.

A tool is a name, a one-line description, a JSON schema of its arguments (what the model sees in
its system prompt) and a Python function. `Toolbox.execute` runs one call and *always* returns a
string observation, whatever the tool does: a result, or `error: ...` when it raises, returns
something other than a string, or runs past its timeout. The agent loop never crashes because a
tool did; the model reads what went wrong and may try something else.

The calculator's arithmetic is lab 06's first exercise (`calculate`, on Python's syntax tree, no
`eval`); `calculator_tool(calculate)` wraps whichever `calculate` it is given as a tool, with the
schema, the limits and the number formatting that stay the same for everyone.
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Callable

MAX_EXPRESSION = 200        # characters of a calculator expression
MAX_EXPONENT = 64           # |b| in a ** b
MAX_RESULT_DIGITS = 400     # integers beyond this are refused (a ** b chains grow fast)
MAX_OBSERVATION = 2000      # characters of a tool result shown to the model


class ToolError(Exception):
    """A tool's own, expected failure (bad input): the message becomes the observation."""


def format_number(value) -> str:
    """The calculator's answer as text: integers exactly, floats rounded to 12 significant digits."""
    if isinstance(value, float):
        return repr(float(f"{value:.12g}"))
    return str(value)


# ----------------------------------------------------------------------------------------------
# tools and the toolbox
# ----------------------------------------------------------------------------------------------
@dataclass
class Tool:
    name: str
    description: str
    parameters: dict                 # JSON schema: {"type": "object", "properties": ..., "required": [...]}
    fn: Callable[..., str]
    timeout: float = 5.0             # seconds; the toolbox stops waiting after this

    def schema(self) -> dict:
        """The OpenAI-style function description a model is shown."""
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": self.parameters}}


def schema(properties: dict, required: list[str] | None = None) -> dict:
    return {"type": "object", "properties": properties, "required": list(required or properties)}


def calculator_tool(calculate: Callable[[str], int | float]) -> Tool:
    """The calculator as a tool: `calculate(expression)` gives the value (or raises ToolError), the
    tool answers it as text (`format_number`)."""
    return Tool("calculator", "Evaluate an arithmetic expression: numbers, + - * / // % ** and parentheses.",
                schema({"expression": {"type": "string", "description": "for example 347*29"}}),
                lambda expression: format_number(calculate(expression)))


@dataclass
class Toolbox:
    tools: dict[str, Tool] = field(default_factory=dict)

    @classmethod
    def of(cls, *tools: Tool) -> "Toolbox":
        return cls({t.name: t for t in tools})

    def schemas(self) -> list[dict]:
        return [t.schema() for t in self.tools.values()]

    def describe(self) -> str:
        """Tool descriptions for a system prompt: one JSON schema per line."""
        return "\n".join(json.dumps({"name": t.name, "description": t.description, "parameters": t.parameters})
                         for t in self.tools.values())

    def execute(self, name: str, arguments: dict) -> tuple[str, str | None]:
        """(observation, error kind or None). Never raises; error kinds: 'unknown_tool', 'tool_error',
        'timeout', 'bad_result'."""
        tool = self.tools.get(name)
        if tool is None:
            return f"error: unknown tool {name!r}; available: {sorted(self.tools)}", "unknown_tool"
        box: dict = {}

        def target():
            try:
                box["value"] = tool.fn(**arguments)
            except BaseException as e:   # a tool's bug must not take the agent down
                box["error"] = e

        worker = threading.Thread(target=target, daemon=True, name=f"tool-{name}")
        worker.start()
        worker.join(tool.timeout)
        if worker.is_alive():   # the thread is abandoned (daemon); the agent goes on
            return f"error: tool {name!r} did not answer within {tool.timeout:g} s", "timeout"
        if "error" in box:
            e = box["error"]
            return f"error: {type(e).__name__}: {e}" if not isinstance(e, ToolError) else f"error: {e}", "tool_error"
        value = box.get("value")
        if not isinstance(value, str):
            return (f"error: tool {name!r} returned {type(value).__name__}, not text; "
                    f"its result cannot be shown"), "bad_result"
        if len(value) > MAX_OBSERVATION:
            value = value[:MAX_OBSERVATION] + f"... [{len(value) - MAX_OBSERVATION} more characters cut]"
        return value, None
