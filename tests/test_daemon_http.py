"""The daemon's HTTP surface over real sockets, with httpx as the client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from reconciler.daemon.callbacks import CallbackHint, volcengine_signature
from reconciler.daemon.http import Endpoints, HttpServer, parse_listen, trigger_on_end
from reconciler.daemon.metrics import DaemonMetrics
from reconciler.daemon.triggers import Source, Trigger, TriggerQueue
from reconciler.errors import UsageError

SECRET = "volc-callback-secret-123"
TOKEN = "aliyun-callback-token-456"


@dataclass
class Daemon:
    """The state the endpoints answer from, changed by the tests as a daemon would."""

    alive: bool = True
    ready: tuple[bool, str] = (True, "")
    status: dict[str, Any] = field(default_factory=lambda: {"sessions": []})
    status_fails: bool = False
    hints: list[CallbackHint] = field(default_factory=list)

    def get_status(self) -> dict[str, Any]:
        if self.status_fails:
            raise RuntimeError("the status provider broke")
        return self.status


def _serve(
    test: Callable[[httpx.AsyncClient, Daemon, TriggerQueue, HttpServer], Awaitable[None]],
    read_timeout: float = 10.0,
) -> None:
    async def main() -> None:
        daemon = Daemon()
        queue = TriggerQueue()
        post = trigger_on_end(queue)

        def on_hint(hint: CallbackHint) -> None:
            daemon.hints.append(hint)
            post(hint)

        endpoints = Endpoints(
            metrics=DaemonMetrics(),
            status=daemon.get_status,
            alive=lambda: daemon.alive,
            ready=lambda: daemon.ready,
            on_hint=on_hint,
            volcengine_secret=SECRET,
            aliyun_token=TOKEN,
        )
        async with HttpServer(endpoints, "127.0.0.1", 0, read_timeout=read_timeout) as server:
            base = f"http://127.0.0.1:{server.port}"
            async with httpx.AsyncClient(base_url=base, timeout=10) as client:
                await test(client, daemon, queue, server)

    asyncio.run(main())


def _volcengine_body(stage: str = "taskStop", secret: str = SECRET) -> bytes:
    data = {
        "AppId": "app1",
        "RoomId": "room1",
        "TaskId": "task1",
        "EventType": 0,
        "RunStage": stage,
    }
    envelope = {
        "EventType": "VoiceChat",
        "EventData": json.dumps(data),
        "EventTime": "2025-01-01T00:00:00Z",
        "EventId": "evt-1",
        "AppId": "app1",
        "Version": "2020-12-01",
        "Nonce": "abcd",
    }
    return json.dumps({**envelope, "Signature": volcengine_signature(envelope, secret)}).encode()


def _aliyun_body(event: str = "agent_stop") -> bytes:
    tag = {"lineage": "l", "session": "front-desk", "attempt": "a"}
    return json.dumps(
        {
            "aiAgentId": "agent",
            "instanceId": "i-1",
            "event": event,
            "userData": json.dumps({"reconciler": tag}),
        }
    ).encode()


def test_health_and_readiness_follow_the_daemon() -> None:
    async def test(client: httpx.AsyncClient, daemon: Daemon, *_: Any) -> None:
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).text == "ready\n"
        daemon.alive = False
        daemon.ready = (False, "the first reconcile has not run yet")
        assert (await client.get("/healthz")).status_code == 503
        not_ready = await client.get("/readyz")
        assert not_ready.status_code == 503
        assert not_ready.text == "the first reconcile has not run yet\n"
        assert (await client.head("/healthz")).status_code == 503

    _serve(test)


def test_metrics_are_prometheus_text_and_status_is_json() -> None:
    async def test(client: httpx.AsyncClient, daemon: Daemon, *_: Any) -> None:
        metrics = await client.get("/metrics")
        assert metrics.status_code == 200
        assert metrics.headers["content-type"].startswith("text/plain; version=")
        names = {f.name for f in text_string_to_metric_families(metrics.text)}
        assert {"reconciler_leader", "reconciler_desired_valid"} <= names
        daemon.status = {"sessions": [{"name": "lobby", "status": "running", "café": "ü"}]}
        status = await client.get("/status?verbose=1")
        assert status.headers["content-type"] == "application/json"
        assert status.json() == daemon.status
        daemon.status_fails = True
        assert (await client.get("/status")).status_code == 500
        assert (await client.get("/healthz")).status_code == 200  # still serving

    _serve(test)


def test_a_genuine_volcengine_task_stop_posts_one_trigger() -> None:
    async def test(client: httpx.AsyncClient, daemon: Daemon, queue: TriggerQueue, _: Any) -> None:
        answer = await client.post("/callbacks/volcengine", content=_volcengine_body())
        assert answer.status_code == 200 and answer.json() == {"ok": True}
        batch = await queue.next_batch()
        assert batch is not None and batch.counts == {
            Trigger(Source.CALLBACK, None, "volcengine", "app1/room1/task1"): 1
        }
        # A stage that is not the end of the task is accepted and asks for nothing.
        other = await client.post("/callbacks/volcengine", content=_volcengine_body("llmOutput"))
        assert other.status_code == 200 and queue.pending == 0
        assert [h.event for h in daemon.hints] == ["taskStop", "llmOutput"]

    _serve(test)


def test_a_forged_volcengine_callback_is_refused_and_changes_nothing() -> None:
    async def test(client: httpx.AsyncClient, daemon: Daemon, queue: TriggerQueue, _: Any) -> None:
        forged = await client.post(
            "/callbacks/volcengine", content=_volcengine_body(secret="guessed")
        )
        assert forged.status_code == 401
        assert forged.json() == {"error": "the callback's Signature does not match"}
        garbage = await client.post("/callbacks/volcengine", content=b"<xml/>")
        assert garbage.status_code == 400
        assert queue.pending == 0 and daemon.hints == []

    _serve(test)


def test_aliyun_callbacks_need_the_token() -> None:
    async def test(client: httpx.AsyncClient, daemon: Daemon, queue: TriggerQueue, _: Any) -> None:
        for header in (TOKEN, f"Bearer {TOKEN}"):
            answer = await client.post(
                "/callbacks/aliyun", content=_aliyun_body(), headers={"Authorization": header}
            )
            assert answer.status_code == 200
        batch = await queue.next_batch()
        assert batch is not None
        assert batch.counts == {Trigger(Source.CALLBACK, "front-desk", "aliyun", None): 2}
        for headers in ({}, {"Authorization": "Bearer nope"}):
            refused = await client.post(
                "/callbacks/aliyun", content=_aliyun_body(), headers=headers
            )
            assert refused.status_code == 401
            assert refused.headers["www-authenticate"] == "Bearer"
        assert queue.pending == 0 and len(daemon.hints) == 2

    _serve(test)


def test_unknown_paths_and_wrong_methods() -> None:
    async def test(client: httpx.AsyncClient, *_: Any) -> None:
        assert (await client.get("/nope")).status_code == 404
        wrong = await client.get("/callbacks/aliyun")
        assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
        assert (await client.post("/healthz", content=b"x")).status_code == 405

    _serve(test)


def test_keep_alive_chunked_bodies_and_a_large_body() -> None:
    async def test(client: httpx.AsyncClient, daemon: Daemon, queue: TriggerQueue, _: Any) -> None:
        async def chunks() -> Any:
            body = _volcengine_body()
            for start in range(0, len(body), 7):
                yield body[start : start + 7]

        answer = await client.post("/callbacks/volcengine", content=chunks())
        assert answer.status_code == 200 and queue.pending == 1
        huge = await client.post("/callbacks/volcengine", content=b"x" * (2 * 1024 * 1024))
        assert huge.status_code == 413
        # The same client keeps working after all of that (new connection or kept one).
        for _ in range(5):
            assert (await client.get("/healthz")).status_code == 200

    _serve(test)


def test_malformed_http_gets_400_and_a_silent_client_is_dropped() -> None:
    async def test(
        client: httpx.AsyncClient, daemon: Daemon, queue: Any, server: HttpServer
    ) -> None:
        silent_reader, silent_writer = await asyncio.open_connection("127.0.0.1", server.port)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"THIS IS NOT HTTP\r\n\r\n")
        await writer.drain()
        answer = await reader.read()
        assert answer.startswith(b"HTTP/1.1 400 ")
        writer.close()
        assert (await client.get("/healthz")).status_code == 200
        # The silent one is closed by the server once its read times out (end of file here).
        assert await asyncio.wait_for(silent_reader.read(), 30) == b""
        silent_writer.close()

    _serve(test, read_timeout=0.2)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9430", ("127.0.0.1", 9430)),
        ("[::1]:80", ("::1", 80)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
    ],
)
def test_parse_listen(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["9430", ":9430", "host:", "host:http", "host:70000"])
def test_parse_listen_refuses(text: str) -> None:
    with pytest.raises(UsageError, match="HOST:PORT"):
        parse_listen(text)
