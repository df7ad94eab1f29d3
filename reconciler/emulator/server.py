"""The emulator's HTTP/1.1 shell: sockets, keep-alive, latency and dropped connections.

Everything the cloud would decide lives in `volcengine.VolcengineApi`; this module only turns
bytes into an `ApiRequest`, sleeps the injected latency, writes the `Reply` (or closes the socket
without one) and serves the unsigned `/_emulator/*` inspection and control endpoints.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

from reconciler.emulator.volcengine import (
    DEFAULT_ALREADY_STARTED_CODE,
    DEFAULT_API_VERSION,
    DEFAULT_NOT_FOUND_CODE,
    ApiRequest,
    Faults,
    VolcengineApi,
)
from reconciler.errors import ReconcilerError, os_reason
from reconciler.providers.volcengine.signing import Clock, Credential, parse_query, utc_now

log = logging.getLogger(__name__)

CONTROL_PREFIX = "/_emulator/"
_MAX_BODY = 4 * 1024 * 1024
# An idle keep-alive connection holds a thread; let it go after a while.
_IDLE_TIMEOUT = 60.0


class _HttpServer(ThreadingHTTPServer):
    """Remembers open connections so that stop() can cut keep-alive clients off too."""

    daemon_threads = True
    # The default backlog of 5 drops connections when a pool of clients connects at once.
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], api: VolcengineApi) -> None:
        self.api = api
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, conn: socket.socket, is_open: bool) -> None:
        with self._open_lock:
            if is_open:
                self._open.add(conn)
            else:
                self._open.discard(conn)

    def close_connections(self) -> None:
        with self._open_lock:
            conns, self._open = list(self._open), set()
        for conn in conns:
            with contextlib.suppress(OSError):  # the client may already be gone
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients vanishing mid-request (or stop() cutting them off) are normal here.
        log.debug("connection from %s ended with an error", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    disable_nagle_algorithm = True  # a reply is small; do not wait for the client's ACK
    timeout = _IDLE_TIMEOUT
    server: _HttpServer

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        self.server.track(self.connection, False)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        body = self._read_body()
        if body is None:
            return
        url = urlsplit(self.path)
        if url.path.startswith(CONTROL_PREFIX):
            status, payload = self._control(url.path[len(CONTROL_PREFIX) :], body)
            self._send(status, json.dumps(payload).encode("utf-8"))
            return
        api = self.server.api
        latency = api.faults.latency
        if latency:
            time.sleep(latency)
        reply = api.handle(
            ApiRequest(
                method=self.command,
                path=url.path,
                query=parse_query(url.query),
                headers=dict(self.headers.items()),
                body=body,
            )
        )
        if reply.drop_connection:
            self.close_connection = True
            return
        self._send(reply.status, reply.body, reply.headers)

    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._send(411, b'{"error":"send a Content-Length"}')
            self.close_connection = True
            return None
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if not 0 <= length <= _MAX_BODY:
            self._send(400, b'{"error":"bad Content-Length"}')
            self.close_connection = True
            return None
        return self.rfile.read(length) if length else b""

    def _control(self, endpoint: str, body: bytes) -> tuple[int, Any]:
        api = self.server.api
        route = (self.command, endpoint)
        if route == ("GET", "tasks"):
            return 200, {"tasks": api.tasks()}
        if route == ("GET", "calls"):
            return 200, api.calls()
        if route == ("GET", "faults"):
            return 200, api.faults.to_json()
        if route == ("POST", "reset"):
            api.reset()
            return 200, {"ok": True}
        try:
            data = json.loads(body or b"{}")
            if not isinstance(data, dict):
                raise ValueError("the body must be a JSON object")
            if route == ("POST", "faults"):
                api.set_faults(Faults.from_json(data))
                return 200, api.faults.to_json()
            if route == ("POST", "end-task"):
                ended = api.end_task(str(data["AppId"]), str(data["RoomId"]), str(data["TaskId"]))
                return 200, {"ended": ended}
        except (ValueError, TypeError, KeyError) as exc:
            return 400, {"error": str(exc)}
        return 404, {"error": f"no emulator endpoint {self.command} {CONTROL_PREFIX}{endpoint}"}

    def _send(
        self,
        status: int,
        body: bytes,
        headers: tuple[tuple[str, str], ...] = (("Content-Type", "application/json"),),
    ) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class EmulatorServer:
    """The Volcengine emulator on a real socket, served from a background thread."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        access_key_id: str,
        secret_access_key: str,
        region: str = "cn-north-1",
        api_version: str = DEFAULT_API_VERSION,
        faults: Faults | None = None,
        session_token: str | None = None,
        already_started_code: str = DEFAULT_ALREADY_STARTED_CODE,
        not_found_code: str = DEFAULT_NOT_FOUND_CODE,
        clock: Clock = utc_now,
    ) -> None:
        self.api = VolcengineApi(
            credentials=[Credential(access_key_id, secret_access_key, session_token)],
            region=region,
            api_version=api_version,
            faults=faults,
            already_started_code=already_started_code,
            not_found_code=not_found_code,
            clock=clock,
        )
        self._httpd = _HttpServer((host, port), self.api)
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return str(self._httpd.server_address[0])

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> Self:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.02},  # how soon stop() is noticed
                name=f"emulator-{self.port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.close_connections()
        self._httpd.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # Direct accessors, so tests need not go through HTTP.
    def tasks(self) -> list[dict[str, Any]]:
        return self.api.tasks()

    def calls(self) -> dict[str, Any]:
        return self.api.calls()

    @property
    def faults(self) -> Faults:
        return self.api.faults

    def set_faults(self, faults: Faults) -> None:
        self.api.set_faults(faults)

    def reset(self) -> None:
        self.api.reset()

    def end_task(self, app_id: str, room_id: str, task_id: str) -> bool:
        return self.api.end_task(app_id, room_id, task_id)


def run_emulator(
    port: int,
    access_key_id: str,
    secret_access_key: str,
    region: str = "cn-north-1",
    api_version: str = DEFAULT_API_VERSION,
    faults: Faults | None = None,
    *,
    host: str = "127.0.0.1",
    session_token: str | None = None,
    already_started_code: str = DEFAULT_ALREADY_STARTED_CODE,
    not_found_code: str = DEFAULT_NOT_FOUND_CODE,
) -> None:
    """Serve until SIGINT/SIGTERM; announce the address on one flushed stdout line.

    Must be called from the main thread (signal handlers can only be installed there).
    """
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    try:
        server = EmulatorServer(
            host,
            port,
            access_key_id=access_key_id,
            secret_access_key=secret_access_key,
            region=region,
            api_version=api_version,
            faults=faults,
            session_token=session_token,
            already_started_code=already_started_code,
            not_found_code=not_found_code,
        )
    except OSError as error:  # the port is taken, or not ours to bind
        raise ReconcilerError(f"cannot listen on {host}:{port}: {os_reason(error)}") from None
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with server:
            print(f"emulator listening on {server.url}", flush=True)
            # A timed wait keeps the main thread returning to the interpreter, where the
            # signal handler runs.
            while not stopping.wait(0.5):
                pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
