"""A small OpenAI-compatible chat-completions server backed by the tiny tool model.

    python -m genfast.agents.server --port 8000
    curl localhost:8000/v1/models
    curl -d '{"model": "tiny-tool-model", "messages": [{"role": "user", "content": "12*34"}]}' \
         localhost:8000/v1/chat/completions

Endpoints: GET /v1/models, POST /v1/chat/completions (non-streaming). The messages are turned
back into the tiny model's compact prompt (goal = first user message; tools offered when the
request declares a calculator in `tools` or in the system prompt; assistant turns and the
'OBSERVATION: ...' user turns become the history) and the reply is the model's next line as the
message content. Standard library only (http.server); one model call at a time (a lock).
"""
from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from . import tasks
from .toolmodel import generate_line, load_tool_model

MODEL_ID = "tiny-tool-model"


def messages_to_prompt(messages: list[dict], tools: list | None) -> str:
    system = " ".join(m.get("content") or "" for m in messages if m.get("role") == "system")
    names = {t.get("function", {}).get("name") for t in (tools or []) if isinstance(t, dict)}
    offered = "calculator" in names or '"calculator"' in system
    turns = [m for m in messages if m.get("role") in ("user", "assistant", "tool")]
    if not turns or turns[0].get("role") != "user":
        raise ValueError("the first non-system message must be the user's goal")
    goal, history, pending = str(turns[0].get("content", "")), [], None
    for m in turns[1:]:
        content = str(m.get("content") or "")
        if m["role"] == "assistant":
            pending = content
        elif pending is not None:
            history.append((pending, content.removeprefix("OBSERVATION:").strip()))
            pending = None
    return tasks.render(goal, history, offered)


def make_server(host: str = "127.0.0.1", port: int = 0, model=None, tok=None) -> ThreadingHTTPServer:
    """A server bound to (host, port); port 0 picks a free one (server.server_address[1])."""
    if model is None:
        model, tok = load_tool_model()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):   # quiet: no line on stderr per request
            pass

        def _send(self, code: int, body: dict):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, code: int, message: str):
            self._send(code, {"error": {"message": message, "type": "invalid_request_error"}})

        def do_GET(self):
            if self.path.rstrip("/") == "/v1/models":
                return self._send(200, {"object": "list", "data": [
                    {"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "course"}]})
            self._error(404, f"no route GET {self.path}")

        def do_POST(self):
            if self.path.rstrip("/") != "/v1/chat/completions":
                return self._error(404, f"no route POST {self.path}")
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                prompt = messages_to_prompt(body["messages"], body.get("tools"))
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                return self._error(400, f"bad request: {e}")
            with lock:
                text = generate_line(model, tok, prompt)
            self._send(200, {
                "id": f"chatcmpl-{time.time_ns()}", "object": "chat.completion", "created": int(time.time()),
                "model": MODEL_ID,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": len(prompt), "completion_tokens": len(text),
                          "total_tokens": len(prompt) + len(text)}})

    return ThreadingHTTPServer((host, port), Handler)


def serve_in_thread(**kwargs) -> tuple[ThreadingHTTPServer, str]:
    """Start a server on a background thread; returns it and its base URL (…/v1)."""
    server = make_server(**kwargs)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    return server, f"http://{host}:{port}/v1"


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    a = ap.parse_args()
    srv = make_server(a.host, a.port)
    print(f"serving {MODEL_ID} on http://{a.host}:{srv.server_address[1]}/v1")
    srv.serve_forever()
