"""Policies: what decides the next action. All have the same signature,

    policy(goal: str, history: list[(model output, observation)], toolbox) -> str (the model's output)

- ScriptedPolicy: replays fixed outputs (deterministic tests, demos of each failure path);
- TinyModelPolicy: the course's tiny model fine-tuned on tool-use traces (the checkpoint ships with genfast);
- OpenAIPolicy: any OpenAI-compatible chat-completions endpoint, over HTTP with the standard library.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request
import weakref
from typing import Callable

from . import tasks
from .toolmodel import generate_line, load_tool_model


class ScriptedPolicy:
    """Output i of `outputs` at step i (the last one repeats); a callable entry gets (goal, history)."""

    def __init__(self, outputs: list):
        self.outputs = list(outputs)

    def __call__(self, goal, history, toolbox):
        out = self.outputs[min(len(history), len(self.outputs) - 1)]
        return out(goal, history) if callable(out) else out


class TinyModelPolicy:
    """The tiny tool model. The tool description in its prompt is the line 'T: calculator', shown
    when the toolbox has a calculator and `offer_tools(goal)` agrees (the reflection experiment
    decides it from memory).

    Greedy decoding of a frozen model is a function of the prompt: each line generated is
    remembered per model (`remember=False` turns that off), so a second run over the same
    episodes (an evaluation and its check, the reflection's retry) costs no model calls."""

    def __init__(self, model=None, tok=None, offer_tools: Callable[[str], bool] | None = None,
                 remember: bool = True):
        if model is None:
            model, tok = load_tool_model()
        self.model, self.tok = model, tok
        self.offer_tools = offer_tools or (lambda goal: True)
        self.lines = _LINES.setdefault(model, {}) if remember else None

    def prompt(self, goal, history, toolbox) -> str:
        tools = "calculator" in toolbox.tools and self.offer_tools(goal)
        return tasks.render(goal, history, tools)

    def __call__(self, goal, history, toolbox):
        prompt = self.prompt(goal, history, toolbox)
        if self.lines is None:
            return generate_line(self.model, self.tok, prompt)
        if prompt not in self.lines:
            if len(self.lines) >= MAX_REMEMBERED:
                self.lines.clear()
            self.lines[prompt] = generate_line(self.model, self.tok, prompt)
        return self.lines[prompt]


MAX_REMEMBERED = 20_000                                   # lines per model
_LINES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()   # model -> {prompt: line}


SYSTEM_PROMPT = """You are an agent. Reach the user's goal. Tools:
{tools}
Reply with exactly one JSON object: {{"tool": NAME, "arguments": {{...}}}} to call a tool, or {{"answer": TEXT}} when done."""


def chat_messages(goal: str, history, toolbox) -> list[dict]:
    """The conversation an OpenAI-style chat model sees: system (tool descriptions), goal, steps."""
    msgs = [{"role": "system", "content": SYSTEM_PROMPT.format(tools=toolbox.describe() or "(none)")},
            {"role": "user", "content": goal}]
    for output, obs in history:
        msgs.append({"role": "assistant", "content": output})
        msgs.append({"role": "user", "content": f"OBSERVATION: {obs}"})
    return msgs


class OpenAIPolicy:
    """Any OpenAI-compatible endpoint: POST {base_url}/chat/completions (urllib, no `openai` package)."""

    def __init__(self, base_url: str, model: str = "tiny-tool-model", api_key: str | None = None,
                 timeout: float = 30.0, temperature: float = 0.0):
        self.base_url = base_url.rstrip("/")
        self.model, self.api_key, self.timeout, self.temperature = model, api_key, timeout, temperature

    def _post(self, path: str, payload: dict) -> dict:
        req = urllib.request.Request(self.base_url + path, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {self.api_key}"} if self.api_key else {})})
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            return json.loads(resp.read().decode())

    def models(self) -> list[str]:
        with urllib.request.urlopen(self.base_url + "/models", timeout=self.timeout) as resp:
            return [m["id"] for m in json.loads(resp.read().decode())["data"]]

    def __call__(self, goal, history, toolbox):
        payload = {"model": self.model, "messages": chat_messages(goal, history, toolbox),
                   "temperature": self.temperature, "tools": toolbox.schemas() or None}
        try:
            reply = self._post("/chat/completions", payload)
            message = reply["choices"][0]["message"]
        except (urllib.error.URLError, TimeoutError, KeyError, IndexError, ValueError) as e:
            # the endpoint failing is an observation too: the loop records it as malformed output
            return f"(endpoint error: {type(e).__name__}: {e})"
        calls = message.get("tool_calls") or []
        if calls:   # a native tool call: turn it into the loop's JSON form
            fn = calls[0].get("function", {})
            try:
                args = json.loads(fn.get("arguments") or "{}")
            except ValueError:
                args = fn.get("arguments")
            return json.dumps({"tool": fn.get("name"), "arguments": args})
        return message.get("content") or ""
