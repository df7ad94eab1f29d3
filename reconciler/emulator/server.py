"""The emulator's HTTP/1.1 shell: sockets, keep-alive, latency and dropped connections.

Everything a cloud would decide lives in its sans-I/O API (`volcengine.VolcengineApi`,
`aliyun.AliyunApi`), all served on one port: a request carrying `x-acs-action` is Alibaba
Cloud's, anything else Volcengine's (`Action`/`Version` in the query). This module only turns
bytes into an `ApiRequest`, picks the API, sleeps the injected latency, writes the `Reply` (or
closes the socket without one) and serves the unsigned `/_emulator/*` endpoints:
`/_emulator/<provider>/<endpoint>` goes to that API's `control`; `POST /_emulator/faults` and
`POST /_emulator/reset` act on every API; any other unprefixed endpoint is Volcengine's (the
paths the emulator had before it served two clouds).
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import socket
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

from reconciler.emulator.aliyun import AliyunApi
from reconciler.emulator.api import ApiRequest, ControlError, EmulatedApi
from reconciler.emulator.custom_llm import CUSTOM_LLM_PATH, CustomLlm, serve_custom_llm
from reconciler.emulator.volcengine import (
    DEFAULT_ALREADY_STARTED_CODE,
    DEFAULT_API_VERSION,
    DEFAULT_NOT_FOUND_CODE,
    Faults,
    VolcengineApi,
)
from reconciler.errors import ReconcilerError, os_reason
from reconciler.providers.aliyun.signing import AcsCredential
from reconciler.providers.volcengine.signing import Clock, Credential, parse_query, utc_now

# The ARTC app the emulator's Alibaba Cloud side checks AuthTokens against, unless told.
DEFAULT_ARTC_APP_ID = "artc-emulator-app"
DEFAULT_ARTC_APP_KEY = "artc-emulator-key"

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
    # The reference CustomLLM endpoint at CUSTOM_LLM_PATH, when served (`--custom-llm`).
    custom_llm: CustomLlm | None = None

    def __init__(self, address: tuple[str, int], apis: Sequence[EmulatedApi]) -> None:
        # Asked in order whether a request is theirs; the last one takes whatever is left and
        # owns the unprefixed control endpoints.
        self.apis = tuple(apis)
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
        if url.path == CUSTOM_LLM_PATH and self.server.custom_llm is not None:
            serve_custom_llm(self.server.custom_llm, self, body)
            return
        if url.path.startswith(CONTROL_PREFIX):
            status, payload = self._control(url.path[len(CONTROL_PREFIX) :], body)
            self._send(status, json.dumps(payload).encode("utf-8"))
            return
        request = ApiRequest(
            method=self.command,
            path=url.path,
            query=parse_query(url.query),
            headers=dict(self.headers.items()),
            body=body,
        )
        api = next(a for a in self.server.apis if a.claims(request) or a is self.server.apis[-1])
        latency = api.faults.latency
        if latency:
            time.sleep(latency)
        reply = api.handle(request)
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
        apis = self.server.apis
        by_name = {api.name: api for api in apis}
        name, _, rest = endpoint.partition("/")
        targets, endpoint = (
            ([by_name[name]], rest) if name in by_name and rest else (apis, endpoint)
        )
        try:
            data = json.loads(body or b"{}")
            if not isinstance(data, dict):
                raise ValueError("the body must be a JSON object")
            route = (self.command, endpoint)
            if route == ("GET", "calls"):
                return 200, targets[-1].calls()
            if route == ("GET", "faults"):
                return 200, targets[-1].faults.to_json()
            if route == ("POST", "faults"):
                faults = Faults.from_json(data)
                for api in targets:
                    api.set_faults(faults)
                return 200, faults.to_json()
            if route == ("POST", "reset"):
                for api in targets:
                    api.reset()
                return 200, {"ok": True}
            answer = targets[-1].control(self.command, endpoint, data)
        except (ControlError, ValueError, TypeError, KeyError) as exc:
            return 400, {"error": str(exc)}
        if answer is None:
            return 404, {"error": f"no emulator endpoint {self.command} {self.path}"}
        return 200, answer

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
    """Both clouds' emulators on one real socket, served from a background thread.

    `access_key_id` / `secret_access_key` (and `session_token`) are accepted by both clouds;
    the Alibaba Cloud side checks AuthTokens against `artc_app_id` / `artc_app_key`, knows only
    `aliyun_agents` when given (else every AIAgentId), refuses `aliyun_unsubscribed_agents`
    with Forbidden.SubscriptionRequired and finishes instances after `aliyun_finish_after`.
    """

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
        custom_llm: CustomLlm | None = None,
        artc_app_id: str = DEFAULT_ARTC_APP_ID,
        artc_app_key: str = DEFAULT_ARTC_APP_KEY,
        aliyun_agents: Sequence[str] | None = None,
        aliyun_unsubscribed_agents: Sequence[str] = (),
        aliyun_finish_after: float | None = None,
    ) -> None:
        self.aliyun = AliyunApi(
            credentials=[AcsCredential(access_key_id, secret_access_key, session_token)],
            artc_app_id=artc_app_id,
            artc_app_key=artc_app_key,
            agents=aliyun_agents,
            unsubscribed_agents=aliyun_unsubscribed_agents,
            finish_after=aliyun_finish_after,
            faults=faults,
            clock=clock,
        )
        self.api = VolcengineApi(
            credentials=[Credential(access_key_id, secret_access_key, session_token)],
            region=region,
            api_version=api_version,
            faults=faults,
            already_started_code=already_started_code,
            not_found_code=not_found_code,
            clock=clock,
        )
        self.volcengine = self.api
        self._httpd = _HttpServer((host, port), [self.aliyun, self.api])
        self._httpd.custom_llm = custom_llm
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

    # Direct accessors, so tests need not go through HTTP. Faults and reset are the whole
    # emulator's; tasks, calls and end_task are Volcengine's (`self.aliyun` has its own).
    def tasks(self) -> list[dict[str, Any]]:
        return self.api.tasks()

    def calls(self) -> dict[str, Any]:
        return self.api.calls()

    @property
    def faults(self) -> Faults:
        return self.api.faults

    def set_faults(self, faults: Faults) -> None:
        self.api.set_faults(faults)
        self.aliyun.set_faults(faults)

    def reset(self) -> None:
        self.api.reset()
        self.aliyun.reset()

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
    custom_llm: CustomLlm | None = None,
    artc_app_id: str = DEFAULT_ARTC_APP_ID,
    artc_app_key: str = DEFAULT_ARTC_APP_KEY,
    aliyun_finish_after: float | None = None,
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
            custom_llm=custom_llm,
            artc_app_id=artc_app_id,
            artc_app_key=artc_app_key,
            aliyun_finish_after=aliyun_finish_after,
        )
    except OSError as error:  # the port is taken, or not ours to bind
        raise ReconcilerError(f"cannot listen on {host}:{port}: {os_reason(error)}") from None
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with server:
            print(f"emulator listening on {server.url}", flush=True)
            if custom_llm is not None:
                print(f"custom LLM at {server.url}{CUSTOM_LLM_PATH}", flush=True)
            # A timed wait keeps the main thread returning to the interpreter, where the
            # signal handler runs.
            while not stopping.wait(0.5):
                pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
