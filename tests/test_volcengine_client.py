"""The Volcengine wire client against the emulator (and a scripted cloud) over real sockets."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from reconciler.emulator.server import EmulatorServer
from reconciler.emulator.volcengine import ALREADY_STARTED_MESSAGE, Faults
from reconciler.errors import (
    AuthRefused,
    Conflict,
    ErrorKind,
    NotFound,
    ProviderError,
    SettingsError,
    Terminal,
    Throttled,
    Transient,
)
from reconciler.providers.volcengine.client import VolcengineClient, classify, parse_retry_after

pytestmark = pytest.mark.anyio

AK = "AKLTclienttest"
SK = "client-secret-key-xyz"
APP = "661e4b8f2f1d3c0123456789"
NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def start_body(task: str = "task1") -> dict[str, Any]:
    return {
        "AppId": APP,
        "RoomId": "room1",
        "TaskId": task,
        "Config": {"LLMConfig": {"Mode": "CustomLLM", "Url": "http://llm", "APIKey": "sk-9876"}},
        "AgentConfig": {"TargetUserId": ["user1"], "UserId": "bot1", "WelcomeMessage": "你好 é"},
    }


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(access_key_id=AK, secret_access_key=SK) as server:
        yield server


def make_client(url: str, **kw: Any) -> VolcengineClient:
    args: dict[str, Any] = {
        "endpoint": url,
        "region": "cn-north-1",
        "api_version": "2024-12-01",
        "access_key_id": AK,
        "secret_access_key": SK,
        "timeout": 5.0,
    }
    args.update(kw)
    return VolcengineClient(**args)


@pytest.fixture
async def client(emulator: EmulatorServer) -> AsyncIterator[VolcengineClient]:
    async with make_client(emulator.url) as c:
        yield c


async def failure(call: Any) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await call
    return caught.value


# -- the happy paths and the documented refusals ---------------------------------------------------


async def test_start_update_stop(client: VolcengineClient, emulator: EmulatorServer) -> None:
    result = await client.start(start_body())
    assert result.action == "StartVoiceChat" and result.request_id and result.result == "ok"
    [task] = emulator.tasks()
    assert task["Body"] == start_body()  # resolved secrets and non-ASCII text arrive intact
    await client.update(APP, "room1", "task1", "ExternalTextToSpeech", "维护通知", 2)
    await client.update(APP, "room1", "task1", "interrupt")
    await client.update(APP, "room1", "task1", "Interrupt")
    assert [u["Command"] for u in emulator.tasks()[0]["Updates"]] == [
        "ExternalTextToSpeech",
        "interrupt",
        "Interrupt",
    ]
    assert emulator.tasks()[0]["Updates"][0]["Message"] == "维护通知"
    await client.stop(APP, "room1", "task1")
    assert emulator.tasks() == []


async def test_duplicate_start_is_a_conflict(client: VolcengineClient) -> None:
    await client.start(start_body())
    error = await failure(client.start(start_body()))
    assert error.kind is ErrorKind.CONFLICT
    assert error.code == "InvalidParameter.TaskAlreadyExists" and error.status == 400
    assert ALREADY_STARTED_MESSAGE in str(error) and error.code in str(error)


async def test_stop_and_update_of_a_missing_task_are_not_found(client: VolcengineClient) -> None:
    for call in (
        client.stop(APP, "room1", "nope"),
        client.update(APP, "room1", "nope", "interrupt"),
    ):
        error = await failure(call)
        assert error.kind is ErrorKind.NOT_FOUND
        assert "InvalidParameter.ErrorActiveTaskNotFound" in str(error)


@pytest.mark.parametrize(("message", "mode"), [("x" * 201, 1), ("hello", 7), ("hello", 0)])
async def test_bad_announcements_are_terminal(
    client: VolcengineClient, message: str, mode: int
) -> None:
    await client.start(start_body())
    error = await failure(
        client.update(APP, "room1", "task1", "ExternalTextToSpeech", message, mode)
    )
    assert error.kind is ErrorKind.TERMINAL
    assert error.code == "InvalidParameter" and error.status == 400
    assert "Parameter" in str(error)


# -- gateway refusals ------------------------------------------------------------------------------


async def test_wrong_secret_is_terminal(emulator: EmulatorServer) -> None:
    async with make_client(emulator.url, secret_access_key="not-the-secret") as c:
        error = await failure(c.start(start_body()))
    assert (error.kind, error.code, error.status) == (
        ErrorKind.TERMINAL,
        "SignatureDoesNotMatch",
        401,
    )
    assert isinstance(error, AuthRefused)
    assert "not-the-secret" not in str(error)


async def test_wrong_access_key_is_terminal(emulator: EmulatorServer) -> None:
    async with make_client(emulator.url, access_key_id="AKLTsomeoneelse") as c:
        error = await failure(c.stop(APP, "room1", "task1"))
    assert (error.kind, error.code) == (ErrorKind.TERMINAL, "InvalidAccessKey")
    assert isinstance(error, AuthRefused)


async def test_expired_x_date_is_terminal(emulator: EmulatorServer) -> None:
    def an_hour_ago() -> datetime:
        return datetime.now(UTC) - timedelta(hours=1)

    async with make_client(emulator.url, clock=an_hour_ago) as c:
        error = await failure(c.stop(APP, "room1", "task1"))
    assert (error.kind, error.code, error.status) == (ErrorKind.TERMINAL, "InvalidTimestamp", 400)


async def test_unknown_version_is_terminal(emulator: EmulatorServer) -> None:
    async with make_client(emulator.url, api_version="2099-01-01") as c:
        error = await failure(c.stop(APP, "room1", "task1"))
    assert (error.kind, error.code, error.status) == (
        ErrorKind.TERMINAL,
        "InvalidActionOrVersion",
        404,
    )


async def test_sts_token_accepted_and_rejected() -> None:
    with EmulatorServer(access_key_id=AK, secret_access_key=SK, session_token="sts-tok-1") as e:
        async with make_client(e.url, session_token="sts-tok-1") as good:
            await good.start(start_body())
        for token in (None, "sts-tok-2"):
            async with make_client(e.url, session_token=token) as bad:
                error = await failure(bad.stop(APP, "room1", "task1"))
            assert (error.kind, error.code) == (ErrorKind.TERMINAL, "InvalidSecretToken")
            assert "sts-tok" not in str(error)
        assert len(e.tasks()) == 1


# -- retryable failures ----------------------------------------------------------------------------


async def test_qps_cap_is_retryable_with_retry_after(
    client: VolcengineClient, emulator: EmulatorServer
) -> None:
    emulator.set_faults(Faults(qps=0.001, retry_after=3))
    await client.start(start_body("a"))
    error = await failure(client.start(start_body("b")))
    assert (error.kind, error.code, error.status) == (ErrorKind.RETRYABLE, "FlowLimitExceeded", 429)
    assert isinstance(error, Throttled)
    assert error.retry_after == 3.0
    assert [t["TaskId"] for t in emulator.tasks()] == ["a"]


@pytest.mark.parametrize("knob", ["error_500_rate", "error_502_rate", "error_503_rate"])
async def test_injected_server_errors_are_retryable(
    client: VolcengineClient, emulator: EmulatorServer, knob: str
) -> None:
    emulator.set_faults(Faults.from_json({knob: 1.0}))
    error = await failure(client.start(start_body()))
    assert error.kind is ErrorKind.RETRYABLE and error.retry_after is None
    assert emulator.tasks() == []


async def test_lost_response_is_retryable_yet_took_effect(
    client: VolcengineClient, emulator: EmulatorServer
) -> None:
    emulator.set_faults(Faults(lost_response_rate=1.0))
    error = await failure(client.start(start_body()))
    assert error.kind is ErrorKind.RETRYABLE and error.status is None
    assert len(emulator.tasks()) == 1
    # The retry the caller makes learns that its first Start did happen.
    emulator.set_faults(Faults())
    assert (await failure(client.start(start_body()))).kind is ErrorKind.CONFLICT


async def test_late_504_is_retryable_yet_took_effect(
    client: VolcengineClient, emulator: EmulatorServer
) -> None:
    emulator.set_faults(Faults(late_504_rate=1.0))
    error = await failure(client.start(start_body()))
    assert (error.kind, error.code, error.status) == (
        ErrorKind.RETRYABLE,
        "InternalServiceTimeout",
        504,
    )
    assert len(emulator.tasks()) == 1


async def test_timeout_is_retryable(emulator: EmulatorServer) -> None:
    emulator.set_faults(Faults(latency=0.5))
    async with make_client(emulator.url, timeout=0.05) as c:
        error = await failure(c.stop(APP, "room1", "task1"))
    assert error.kind is ErrorKind.RETRYABLE and "Timeout" in str(error)


async def test_refused_connection_is_retryable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with make_client(f"http://127.0.0.1:{port}") as c:
        error = await failure(c.stop(APP, "room1", "task1"))
    assert error.kind is ErrorKind.RETRYABLE


async def test_keep_alive_under_concurrency(
    client: VolcengineClient, emulator: EmulatorServer
) -> None:
    import anyio

    async with anyio.create_task_group() as group:
        for i in range(40):
            group.start_soon(client.start, start_body(f"t{i}"))
    assert len(emulator.tasks()) == 40
    assert emulator.calls()["by_outcome"] == {"ok": 40}


# -- a scripted cloud, for answers the emulator never gives ----------------------------------------


class Scripted(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        server: ScriptedServer = self.server  # type: ignore[assignment]
        server.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
        status, headers, body = server.answer
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class ScriptedServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Scripted)
        self.bodies: list[bytes] = []
        self.answer: tuple[int, dict[str, str], bytes] = (200, {}, b"{}")

    def script(self, status: int, payload: Any, **headers: str) -> None:
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.answer = (status, headers, raw)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def scripted() -> Iterator[ScriptedServer]:
    server = ScriptedServer()
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def error_payload(code: str, message: str) -> dict[str, Any]:
    return {"ResponseMetadata": {"RequestId": "r-1", "Error": {"Code": code, "Message": message}}}


async def test_http_200_carrying_an_error_is_a_failure(scripted: ScriptedServer) -> None:
    async with make_client(scripted.url) as c:
        scripted.script(200, error_payload("InvalidParameter", "Parameter X is bad"))
        error = await failure(c.start(start_body()))
        assert (error.kind, error.code, error.status) == (
            ErrorKind.TERMINAL,
            "InvalidParameter",
            200,
        )
        assert "Parameter X is bad" in str(error) and "r-1" in str(error)
        scripted.script(200, error_payload("InternalError", "try later"))
        assert (await failure(c.start(start_body()))).kind is ErrorKind.RETRYABLE
        scripted.script(200, error_payload("TaskNotExist", "gone"))
        assert (await failure(c.stop(APP, "r", "t"))).kind is ErrorKind.NOT_FOUND


async def test_success_does_not_depend_on_the_result_value(scripted: ScriptedServer) -> None:
    async with make_client(scripted.url) as c:
        scripted.script(200, {"ResponseMetadata": {"RequestId": "r-2"}, "Result": {}})
        assert (await c.stop(APP, "r", "t")).request_id == "r-2"


async def test_non_json_gateway_answers_are_classified_by_status(scripted: ScriptedServer) -> None:
    async with make_client(scripted.url) as c:
        scripted.script(502, b"<html>bad gateway</html>")
        error = await failure(c.stop(APP, "r", "t"))
        assert (error.kind, error.status) == (ErrorKind.RETRYABLE, 502)
        assert "bad gateway" in str(error)
        scripted.script(403, b"")
        assert (await failure(c.stop(APP, "r", "t"))).kind is ErrorKind.TERMINAL
        scripted.script(200, b"<html>captive portal</html>")
        assert (await failure(c.stop(APP, "r", "t"))).kind is ErrorKind.RETRYABLE
        scripted.script(200, {"Result": "ok"})
        assert (await failure(c.stop(APP, "r", "t"))).kind is ErrorKind.RETRYABLE


async def test_retry_after_as_http_date(scripted: ScriptedServer) -> None:
    later = format_datetime(NOW + timedelta(seconds=7), usegmt=True)
    async with make_client(scripted.url, clock=lambda: NOW) as c:
        scripted.script(
            429, error_payload("FlowLimitExceeded.QPSOverLimit", "slow"), **{"Retry-After": later}
        )
        error = await failure(c.stop(APP, "r", "t"))
    assert error.kind is ErrorKind.RETRYABLE and error.retry_after == 7.0


async def test_body_is_compact_utf8_json_signed_as_sent(scripted: ScriptedServer) -> None:
    scripted.script(200, {"ResponseMetadata": {}, "Result": "ok"})
    async with make_client(scripted.url) as c:
        await c.start(start_body())
    expected = json.dumps(start_body(), ensure_ascii=False, separators=(",", ":")).encode()
    assert scripted.bodies == [expected]


async def test_echoed_secrets_are_masked_in_errors(scripted: ScriptedServer) -> None:
    scripted.script(400, error_payload("InvalidParameter", f"APIKey sk-9876 or {SK} rejected"))
    async with make_client(scripted.url) as c:
        error = await failure(c.start(start_body()))
        assert "sk-9876" not in str(error) and SK not in str(error)
        assert SK not in repr(c)


# -- pure parts ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "message", "kind"),
    [
        (400, "InvalidParameter.TaskAlreadyExists", "", Conflict),
        (400, "InvalidParameter", ALREADY_STARTED_MESSAGE, Conflict),
        (400, "AlreadyStarted", "", Conflict),
        (400, "TaskNotExist", "", NotFound),
        (400, "InvalidParameter.ErrorActiveTaskNotFound", "", NotFound),
        (404, "TaskNotFound", "", NotFound),
        (429, "", "", Throttled),
        (200, "FlowLimitExceeded.QPSOverLimit", "", Throttled),
        (500, "InternalError", "", Transient),
        (200, "InternalServiceTimeout", "", Transient),
        (200, "InternalServiceError", "", Transient),
        (200, "ServiceUnavailableTemp", "", Transient),
        (599, "", "", Transient),
        (None, "", "", Terminal),
        (200, "", "<html>", Transient),
        (200, "InvalidParameter", "bad", Terminal),
        (401, "SignatureDoesNotMatch", "", AuthRefused),
        (403, "AccessDenied", "", AuthRefused),
        (400, "InvalidAccessKey", "", AuthRefused),
        (401, "InvalidSecretToken", "", AuthRefused),
        (400, "MissingParameter", "", Terminal),
        (404, "InvalidActionOrVersion", "", Terminal),
    ],
)
def test_classify(status: int | None, code: str, message: str, kind: type[ProviderError]) -> None:
    assert classify(status, code, message) is kind


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        ("", None),
        ("5", 5.0),
        ("1.5", 1.5),
        ("-3", 0.0),
        ("inf", None),
        ("soon", None),
        ("Thu, 02 Jan 2025 03:04:15 GMT", 10.0),
        ("Thu, 02 Jan 2025 03:00:00 GMT", 0.0),
    ],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, NOW) == seconds


def test_settings_are_checked() -> None:
    with pytest.raises(SettingsError):
        make_client("rtc.volcengineapi.com")
    with pytest.raises(SettingsError):
        make_client("https://rtc.volcengineapi.com", secret_access_key="")
