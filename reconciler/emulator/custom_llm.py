"""A reference CustomLLM endpoint: what a Volcengine voice agent's LLM service must answer.

Served by the emulator (`reconciler emulator --custom-llm`) at CUSTOM_LLM_PATH on its port, so
demos and tests can run a whole session, probe included, on one machine. It answers exactly
by the contract (docs/custom-llm-contract.md): HTTP 200, `Content-Type: text/event-stream`,
one `data:` line per event holding a `chat.completion.chunk` with the same `id` and `created`
on every chunk, and a final `data: [DONE]`. The reply is a fixed text or, by default, an echo
of the last user turn. `answer` decides (pure); `serve_custom_llm` writes it on a handler,
chunk by chunk.
"""

from __future__ import annotations

import hmac
import json
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

CUSTOM_LLM_PATH = "/custom-llm/v1/chat/completions"


@dataclass(frozen=True, slots=True)
class LlmAnswer:
    status: int
    content_type: str
    events: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class CustomLlm:
    """`api_key`: the Bearer token required (None: any, or none). `reply`: the fixed answer
    (None: echo the last user message)."""

    api_key: str | None = None
    reply: str | None = None
    clock: Callable[[], float] = field(default=time.time)

    def answer(self, method: str, headers: Mapping[str, str], body: bytes) -> LlmAnswer:
        if method != "POST":
            return _error(405, "use POST")
        lowered = {name.lower(): value for name, value in headers.items()}
        sent = lowered.get("authorization", "").encode("utf-8", "replace")
        wanted = f"Bearer {self.api_key}".encode()
        if self.api_key is not None and not hmac.compare_digest(sent, wanted):
            return _error(401, "missing or wrong Authorization: Bearer <APIKey>")
        try:
            request = json.loads(body)
        except ValueError:
            return _error(400, "the body is not JSON")
        problem = _request_problem(request)
        if problem is not None:
            return _error(400, problem)
        text = self.reply if self.reply is not None else _echo(request["messages"])
        return LlmAnswer(200, "text/event-stream", self._events(text, request.get("model")))

    def _events(self, text: str, model: Any) -> tuple[bytes, ...]:
        base = {
            "id": "chatcmpl-" + secrets.token_hex(12),
            "object": "chat.completion.chunk",
            "created": int(self.clock()),
            "model": model if isinstance(model, str) else "emulator",
        }

        def chunk(delta: dict[str, str], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            data = json.dumps({**base, "choices": [choice]}, ensure_ascii=False)
            return f"data: {data}\n\n".encode()

        words = text.split(" ")
        pieces = [word if i == 0 else " " + word for i, word in enumerate(words)]
        return (
            chunk({"role": "assistant", "content": ""}),
            *(chunk({"content": piece}) for piece in pieces if piece),
            chunk({}, "stop"),
            b"data: [DONE]\n\n",
        )


def _request_problem(request: Any) -> str | None:
    if not isinstance(request, dict):
        return "the body must be a JSON object"
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages:
        return "`messages` must be a non-empty array"
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            return f"`messages[{index}]` must be an object with a `role`"
    if request.get("stream") is not True:
        return "`stream` must be true: the platform reads a server-sent event stream"
    return None


def _echo(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        content = message.get("content")
        if message.get("role") == "user" and isinstance(content, str) and content.strip():
            return f"You said: {content.strip()}"
    return "Hello! I am the emulator's reference CustomLLM."


def _error(status: int, message: str) -> LlmAnswer:
    body = json.dumps({"error": {"message": message}}).encode()
    return LlmAnswer(status, "application/json", (body,))


def serve_custom_llm(llm: CustomLlm, handler: BaseHTTPRequestHandler, body: bytes) -> None:
    """Write the answer on an HTTP/1.1 handler: an error in one piece, a stream chunked and
    flushed event by event, as a real LLM streams its tokens."""
    answer = llm.answer(handler.command, dict(handler.headers.items()), body)
    handler.send_response(answer.status)
    handler.send_header("Content-Type", answer.content_type)
    if answer.status != 200:
        handler.send_header("Content-Length", str(len(answer.events[0])))
        handler.end_headers()
        handler.wfile.write(answer.events[0])
        return
    handler.send_header("Cache-Control", "no-cache")
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    for event in answer.events:
        handler.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
        handler.wfile.flush()
    handler.wfile.write(b"0\r\n\r\n")
    handler.wfile.flush()
