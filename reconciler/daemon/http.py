"""The daemon's HTTP surface on --listen: health, readiness, metrics, status and callbacks.

    GET  /healthz               200 while the daemon's loop is alive, else 503
    GET  /readyz                200 when leading and the last reconcile ran, or a healthy
                                standby; else 503 with the reason
    GET  /metrics               Prometheus text (DaemonMetrics)
    GET  /status                JSON from the status provider
    POST /callbacks/volcengine  VoiceChat events; 401 unless the envelope signature verifies
    POST /callbacks/aliyun      agent events; 401 unless Authorization carries the token

asyncio.start_server with h11 (the sans-I/O HTTP/1.1 parser httpx already brings): six routes
do not justify a web framework. Keep-alive is supported; every read has a timeout, so a client
that opens a connection and says nothing does not hold it forever. A verified callback answers
200 at once and hands its hint to `on_hint` (the daemon posts a trigger); a callback never
waits for a reconcile — Volcengine wants its answer within 5 seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import h11
import structlog

from reconciler.daemon.callbacks import (
    MAX_CALLBACK_BYTES,
    CallbackHint,
    CallbackRejected,
    parse_aliyun,
    parse_volcengine,
)
from reconciler.daemon.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from reconciler.daemon.metrics import DaemonMetrics
from reconciler.daemon.triggers import Source, Trigger, TriggerQueue
from reconciler.errors import ReconcilerError, UsageError

DEFAULT_LISTEN = "127.0.0.1:9430"
READ_TIMEOUT_SECONDS = 10.0
READ_CHUNK = 65536
_log = structlog.get_logger("reconciler.daemon.http")


@dataclass(frozen=True, slots=True)
class Endpoints:
    """What the routes answer from; the daemon supplies these (secrets as plain values, read
    once from the settings)."""

    metrics: DaemonMetrics
    status: Callable[[], Mapping[str, Any]]
    alive: Callable[[], bool]
    ready: Callable[[], tuple[bool, str]]  # (ready, why not)
    on_hint: Callable[[CallbackHint], None]
    volcengine_secret: str | None = None
    aliyun_token: str | None = None
    # Whether a verified callback can be acted on here: a standby answers 503, so that the
    # cloud delivers it again (through a Service, perhaps to the leader).
    accepting: Callable[[], bool] = lambda: True


def trigger_on_end(queue: TriggerQueue) -> Callable[[CallbackHint], None]:
    """The usual on_hint: a hint that a session ended asks for a run about that session;
    other events (a task started, a turn finished) ask for nothing."""

    def post(hint: CallbackHint) -> None:
        if hint.ended:
            queue.post(
                Trigger(Source.CALLBACK, hint.session, hint.provider, hint.identity, hint.at)
            )

    return post


def parse_listen(text: str) -> tuple[str, int]:
    """HOST:PORT (`[::1]:9430` for IPv6) as (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"--listen {text!r}: expected HOST:PORT, e.g. {DEFAULT_LISTEN}")
    return host.removeprefix("[").removesuffix("]"), int(port)


class DaemonError(ReconcilerError):
    """The daemon cannot start (its address is taken)."""


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


def _text(status: int, text: str) -> Reply:
    return Reply(status, (text + "\n").encode("utf-8"))


def _json(status: int, value: Any) -> Reply:
    body = json.dumps(value, default=str, ensure_ascii=False).encode("utf-8")
    return Reply(status, body, "application/json")


_ROUTES: Mapping[str, str] = {
    "/healthz": "GET",
    "/readyz": "GET",
    "/metrics": "GET",
    "/status": "GET",
    "/callbacks/volcengine": "POST",
    "/callbacks/aliyun": "POST",
}


def route(
    endpoints: Endpoints, method: str, target: str, headers: Mapping[str, str], body: bytes
) -> Reply:
    """The answer to one request (pure but for the endpoint callbacks it calls)."""
    path = target.split("?", 1)[0]
    allowed = _ROUTES.get(path)
    if allowed is None:
        return _text(404, "not found")
    if method != allowed and not (allowed == "GET" and method == "HEAD"):
        return Reply(405, b"method not allowed\n", headers=(("Allow", allowed),))
    if path == "/healthz":
        return _text(200, "ok") if endpoints.alive() else _text(503, "the loop is not alive")
    if path == "/readyz":
        ready, why = endpoints.ready()
        return _text(200, "ready") if ready else _text(503, why or "not ready")
    if path == "/metrics":
        return Reply(200, endpoints.metrics.exposition(), METRICS_CONTENT_TYPE)
    if path == "/status":
        return _json(200, endpoints.status())
    return _callback(endpoints, path, headers, body)


def _callback(endpoints: Endpoints, path: str, headers: Mapping[str, str], body: bytes) -> Reply:
    provider = path.rsplit("/", 1)[-1]
    try:
        if provider == "volcengine":
            hint = parse_volcengine(body, endpoints.volcengine_secret)
        else:
            hint = parse_aliyun(body, headers.get("authorization"), endpoints.aliyun_token)
    except CallbackRejected as rejected:
        # Never the body or the headers: they may carry the token being guessed at.
        _log.warning(
            "callback refused", provider=provider, status=rejected.status, reason=rejected.reason
        )
        extra = (
            (("WWW-Authenticate", "Bearer"),)
            if provider == "aliyun" and rejected.status == 401
            else ()
        )
        reply = _json(rejected.status, {"error": rejected.reason})
        return Reply(reply.status, reply.body, reply.content_type, extra)
    if hint is not None and not endpoints.accepting():
        return _json(503, {"error": "this replica is standing by; deliver to the leader"})
    if hint is not None:
        _log.info(
            "callback",
            provider=hint.provider,
            cloud_event=hint.event,
            ended=hint.ended,
            session=hint.session,
            identity=hint.identity,
            event_id=hint.event_id,
        )
        endpoints.on_hint(hint)
    return _json(200, {"ok": True})


class HttpServer:
    """The listening socket and its connections; `async with` starts and stops it."""

    def __init__(
        self,
        endpoints: Endpoints,
        host: str,
        port: int,
        *,
        read_timeout: float = READ_TIMEOUT_SECONDS,
    ) -> None:
        self._endpoints = endpoints
        self._read_timeout = read_timeout
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The bound port (the one the OS chose when asked for 0)."""
        if self._server is None:
            raise RuntimeError("the server is not started")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(self._connection, self._host, self._port)
        except OSError as error:
            # asyncio's own message repeats the address; the errno's words are enough.
            reason = os.strerror(error.errno) if error.errno else str(error)
            raise DaemonError(
                f"cannot listen on {self._host}:{self._port}: {reason.lower()} "
                "(set --listen or RECONCILER_LISTEN)"
            ) from None

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> HttpServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await _serve(self._endpoints, reader, writer, self._read_timeout)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass  # the client went away or fell silent: nothing to answer
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()


async def _serve(
    endpoints: Endpoints,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    read_timeout: float,
) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=READ_CHUNK)
    while True:
        try:
            request = await _next_request(conn, reader, read_timeout)
        except h11.RemoteProtocolError as bad:
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                await _send(conn, writer, _text(bad.error_status_hint, "bad request"), head=False)
            return
        except _TooLarge:
            await _send(conn, writer, _text(413, "request body too large"), head=False)
            return
        if request is None:
            return
        method, target, headers, body = request
        try:
            reply = route(endpoints, method, target, headers, body)
        except Exception:  # an endpoint callback failed: answer, and keep serving
            _log.exception("http handler failed", method=method, target=target.split("?")[0])
            reply = _text(500, "internal error")
        await _send(conn, writer, reply, head=method == "HEAD")
        if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
            return
        try:
            conn.start_next_cycle()
        except h11.LocalProtocolError:
            return


class _TooLarge(Exception):
    pass


async def _next_request(
    conn: h11.Connection, reader: asyncio.StreamReader, read_timeout: float
) -> tuple[str, str, dict[str, str], bytes] | None:
    """The next complete request, or None when the client closed the connection."""
    request: h11.Request | None = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await asyncio.wait_for(reader.read(READ_CHUNK), read_timeout)
            conn.receive_data(data)
            continue
        if isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_CALLBACK_BYTES:
                raise _TooLarge
        elif isinstance(event, h11.EndOfMessage) and request is not None:
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.headers}
            return (
                request.method.decode("ascii"),
                request.target.decode("latin-1"),
                headers,
                bytes(body),
            )
        elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
            return None


async def _send(
    conn: h11.Connection, writer: asyncio.StreamWriter, reply: Reply, *, head: bool
) -> None:
    headers = [
        ("Content-Type", reply.content_type),
        ("Content-Length", str(len(reply.body))),
        ("Cache-Control", "no-store"),
        *reply.headers,
    ]
    if conn.their_state is not h11.DONE:
        headers.append(("Connection", "close"))  # the request was not read to its end
    writer.write(conn.send(h11.Response(status_code=reply.status, headers=headers)) or b"")
    if not head:
        writer.write(conn.send(h11.Data(data=reply.body)) or b"")
    writer.write(conn.send(h11.EndOfMessage()) or b"")
    await writer.drain()
