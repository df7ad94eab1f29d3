"""Real CustomLLM endpoints on 127.0.0.1 that answer well or in one specific wrong way each.

`LlmEndpoints` serves every behaviour on one port, one path each (`url("good")`), records what
each path received, and releases the slow ones when it stops, so no thread outlives a test.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

BEHAVIOURS = (
    "good",
    "slow",
    "stall",
    "silent",
    "unauthorized",
    "wrong-type",
    "no-done",
    "malformed",
    "wrong-object",
)


def chunk_line(content: str, **override: Any) -> bytes:
    chunk = {
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "test",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}],
    }
    chunk.update(override)
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.0: the body ends when the connection closes, as a streaming server's may.
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        behaviour = self.path.strip("/")
        with self.server.lock:
            self.server.received[behaviour].append(
                {"headers": dict(self.headers.items()), "body": json.loads(body)}
            )
        if behaviour == "slow":
            self.server.release.wait(30)
            return self._stream(chunk_line("late") + b"data: [DONE]\n\n")
        if behaviour == "unauthorized":
            # Echoes the key it was sent: the probe must mask it.
            echo = self.headers.get("Authorization", "")
            return self._send(401, "application/json", json.dumps({"error": f"bad {echo}"}))
        if behaviour == "wrong-type":
            return self._send(200, "application/json", json.dumps({"choices": []}))
        if behaviour == "silent":  # headers, then nothing
            self._start_stream()
            self.wfile.flush()
            self.server.release.wait(30)
            return None
        if behaviour == "stall":
            self._start_stream()
            self.wfile.write(chunk_line("thinking"))
            self.wfile.flush()
            self.server.release.wait(30)
            return None
        answers = {
            "good": chunk_line("Hel") + chunk_line("lo") + b"data: [DONE]\n\n",
            "no-done": chunk_line("Hel") + chunk_line("lo"),
            "malformed": chunk_line("Hel") + b'data: {"id": "chatcmpl-test", "obj\n\n',
            "wrong-object": chunk_line("Hel", object="chat.completion") + b"data: [DONE]\n\n",
        }
        return self._stream(answers[behaviour])

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()

    def _stream(self, data: bytes) -> None:
        self._start_stream()
        self.wfile.write(data)

    def _send(self, status: int, content_type: str, text: str) -> None:
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    # Request threads are joined at close (the slow ones are released first).
    daemon_threads = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.received: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
        self.release = threading.Event()


class LlmEndpoints:
    def __init__(self) -> None:
        self._server = _Server()
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, behaviour: str) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/{behaviour}"

    def received(self, behaviour: str) -> list[dict[str, Any]]:
        with self._server.lock:
            return list(self._server.received[behaviour])

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.release.set()
        self._server.shutdown()
        self._thread.join()
        self._server.server_close()
