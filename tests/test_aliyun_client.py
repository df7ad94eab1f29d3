"""The ICE wire client against the emulator over real sockets, through every error class."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from aliyun_helpers import AGENT, AK, UNSUBSCRIBED, emulator_kwargs, make_client, start_params

from reconciler.emulator.server import EmulatorServer
from reconciler.emulator.volcengine import Faults
from reconciler.errors import (
    AuthRefused,
    NotFound,
    ProviderError,
    SettingsError,
    Terminal,
    Throttled,
    Transient,
)
from reconciler.providers.aliyun.client import AliyunClient, classify, parse_retry_after_ms

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(**emulator_kwargs()) as server:
        yield server


@pytest.fixture
async def client(emulator: EmulatorServer) -> AsyncIterator[AliyunClient]:
    async with make_client(emulator.url) as c:
        yield c


async def failure(call: Any) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await call
    return caught.value


# -- the actions -----------------------------------------------------------------------------------


async def test_every_action_round_trips(client: AliyunClient, emulator: EmulatorServer) -> None:
    instance_id = await client.start({**start_params(), "UserData": '{"k":"v w"}'})
    [stored] = emulator.aliyun.instances()
    assert stored["InstanceId"] == instance_id and stored["Status"] == "Created"
    # Nested objects travel as JSON strings and arrive intact, spaces, `*`, `~` and CJK too.
    assert stored["AgentConfig"]["Greeting"] == "Hello *there*~ 你好"
    assert stored["UserData"] == '{"k":"v w"}'
    assert "AuthToken" not in stored["RuntimeConfig"]  # checked, then forgotten

    described = await client.describe(instance_id)
    assert described["Status"] == "Created"
    assert described["RuntimeConfig"] == {"ChannelId": "ch-1", "AgentUserId": "agent-1"}

    await client.update(instance_id, {"AgentConfig": {"TtsConfig": {"VoiceId": "xiaoyun"}}})
    agent_config = (await client.describe(instance_id))["AgentConfig"]
    assert agent_config["TtsConfig"] == {"VoiceId": "xiaoyun"}
    assert agent_config["Greeting"] == "Hello *there*~ 你好"  # merged, not replaced

    await client.speak(instance_id, "Please hold.", enable_interrupt=False)
    assert emulator.aliyun.instances()[0]["Speeches"] == [
        {"Text": "Please hold.", "EnableInterrupt": "false"}
    ]
    rows = await client.list_page(AGENT, 1, 100)
    assert [r["Status"] for r in rows] == ["Created"] and "InstanceId" not in rows[0]
    assert await client.concurrency(AGENT) == 1

    await client.stop(instance_id)
    assert (await client.describe(instance_id))["Status"] == "Finished"
    assert await client.concurrency(AGENT) == 0


async def test_the_request_is_rpc_style_as_the_sdk_sends_it() -> None:
    seen: list[httpx.Request] = []

    async def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"RequestId": "r1", "InstanceId": "i1"})

    http = httpx.AsyncClient(transport=httpx.MockTransport(record))
    client = make_client("https://ice.cn-shanghai.aliyuncs.com", http=http)
    assert await client.start(start_params()) == "i1"
    await http.aclose()
    [request] = seen
    assert request.method == "POST" and request.url.path == "/" and request.content == b""
    query = dict(httpx.QueryParams(request.url.query.decode()))
    assert json.loads(query["RuntimeConfig"])["ChannelId"] == "ch-1"
    assert query["AgentConfig"] == json.dumps(
        start_params()["AgentConfig"], ensure_ascii=False, separators=(",", ":")
    )
    assert (
        b"%2A" in request.url.query and b"~" in request.url.query and b"+" not in request.url.query
    )
    assert request.headers["x-acs-action"] == "StartAIAgentInstance"
    assert request.headers["x-acs-version"] == "2020-11-09"
    assert "content-type" not in request.headers


# -- every error class -----------------------------------------------------------------------------


async def test_throttling_is_http_400_with_a_retry_after_floor(
    client: AliyunClient, emulator: EmulatorServer
) -> None:
    emulator.set_faults(Faults(error_429_rate=1.0, retry_after=0.25, seed=1))
    error = await failure(client.start(start_params()))
    assert isinstance(error, Throttled)
    assert (error.status, error.code, error.retry_after) == (400, "Throttling.User", 0.25)
    assert emulator.aliyun.instances() == []  # refused before taking effect


async def test_the_qps_cap_throttles_too(client: AliyunClient, emulator: EmulatorServer) -> None:
    emulator.set_faults(Faults(qps=1.0))
    await client.concurrency(AGENT)
    error = await failure(client.concurrency(AGENT))
    assert isinstance(error, Throttled) and error.retry_after == 0.1
    assert emulator.aliyun.calls()["throttled"] == 1


@pytest.mark.parametrize(
    ("knob", "status", "code"),
    [
        ("error_500_rate", 500, "InternalError"),
        ("error_502_rate", 502, "BadGateway"),
        ("error_503_rate", 503, "ServiceUnavailable"),
    ],
)
async def test_server_errors_are_transient_and_took_no_effect(
    client: AliyunClient, emulator: EmulatorServer, knob: str, status: int, code: str
) -> None:
    emulator.set_faults(Faults(**{knob: 1.0}))
    error = await failure(client.start(start_params()))
    assert type(error) is Transient and (error.status, error.code) == (status, code)
    assert error.sent and emulator.aliyun.instances() == []


async def test_a_late_504_and_a_lost_answer_are_transient_after_taking_effect(
    client: AliyunClient, emulator: EmulatorServer
) -> None:
    emulator.set_faults(Faults(late_504_rate=1.0))
    late = await failure(client.start(start_params("ch-a")))
    emulator.set_faults(Faults(lost_response_rate=1.0))
    lost = await failure(client.start(start_params("ch-b")))
    assert type(late) is Transient and late.status == 504 and late.sent
    assert type(lost) is Transient and lost.status is None and lost.sent
    assert len(emulator.aliyun.live_instances()) == 2


async def test_a_refused_connection_certainly_never_left() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with make_client(f"http://127.0.0.1:{port}") as client:
        error = await failure(client.concurrency(AGENT))
    assert type(error) is Transient and not error.sent


async def test_wrong_credentials_are_refused_for_the_whole_apply(emulator: EmulatorServer) -> None:
    async with make_client(emulator.url, access_key_secret="not-the-secret") as wrong:
        bad_secret = await failure(wrong.start(start_params()))
    async with make_client(emulator.url, access_key_id="LTAIunknown") as unknown:
        bad_key = await failure(unknown.start(start_params()))
    async with make_client(emulator.url, security_token="sts-nobody-issued") as sts:
        bad_token = await failure(sts.start(start_params()))
    assert isinstance(bad_secret, AuthRefused) and bad_secret.code == "SignatureDoesNotMatch"
    assert isinstance(bad_key, AuthRefused) and bad_key.code == "InvalidAccessKeyId.NotFound"
    assert isinstance(bad_token, AuthRefused) and bad_token.code.startswith("InvalidSecurityToken")
    assert "not-the-secret" not in str(bad_secret)


async def test_a_skewed_clock_is_refused(emulator: EmulatorServer) -> None:
    skewed = datetime.now(UTC) - timedelta(minutes=20)
    async with make_client(emulator.url, clock=lambda: skewed) as client:
        error = await failure(client.concurrency(AGENT))
    assert isinstance(error, Terminal) and error.code == "InvalidTimeStamp.Expired"


async def test_request_errors_are_terminal_with_the_seed_client_codes(
    client: AliyunClient,
) -> None:
    missing = await failure(
        client.start({k: v for k, v in start_params().items() if k != "AIAgentId"})
    )
    unknown_agent = await failure(client.start({**start_params(), "AIAgentId": "nope"}))
    unsubscribed = await failure(client.start({**start_params(), "AIAgentId": UNSUBSCRIBED}))
    bad_token = await failure(
        client.start(
            {
                **start_params(),
                "RuntimeConfig": {**start_params()["RuntimeConfig"], "ChannelId": "ch-2"},
            }
        )
    )
    assert isinstance(missing, Terminal) and missing.code == "MissingParameter"
    assert isinstance(unknown_agent, Terminal) and unknown_agent.client_code == -10204
    assert unknown_agent.code == "AgentNotFound"  # not-found-shaped, yet terminal, not NotFound
    assert isinstance(unsubscribed, Terminal) and unsubscribed.client_code == -10203
    assert isinstance(bad_token, Terminal) and bad_token.code == "InvalidParameter.AuthToken"


async def test_an_unknown_instance_is_not_found_on_every_instance_action(
    client: AliyunClient,
) -> None:
    for call in (
        client.stop("missing"),
        client.describe("missing"),
        client.update("missing", {"AgentConfig": {"Volume": 10}}),
        client.speak("missing", "hi", enable_interrupt=True),
    ):
        error = await failure(call)
        assert isinstance(error, NotFound) and error.code == "InvalidInstanceId.NotFound"


async def test_a_start_into_a_taken_seat_replaces_the_earlier_agent(
    client: AliyunClient, emulator: EmulatorServer
) -> None:
    first = await client.start(start_params())
    second = await client.start(start_params())
    assert (await client.describe(first))["Status"] == "Finished"
    assert (await client.describe(first))["CallInfo"]["HangupRole"] == 2
    assert [i["InstanceId"] for i in emulator.aliyun.live_instances()] == [second]


# -- classification without a server ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "status", "code", "retry_after", "kind"),
    [
        ("StartAIAgentInstance", 400, "Throttling.Api", None, Throttled),
        ("StartAIAgentInstance", 400, "Throttling", None, Throttled),
        ("StartAIAgentInstance", 429, "", None, Throttled),
        ("StartAIAgentInstance", 400, "SomethingElse", 0.5, Throttled),  # the header decides
        ("StartAIAgentInstance", 503, "ServiceUnavailable", None, Transient),
        ("StartAIAgentInstance", 400, "InternalError", None, Transient),
        ("StartAIAgentInstance", 200, "", None, Transient),
        ("StartAIAgentInstance", 403, "Forbidden.RAM", None, AuthRefused),
        ("StartAIAgentInstance", 400, "InvalidAccessKeyId.Inactive", None, AuthRefused),
        ("StartAIAgentInstance", 400, "InvalidInstanceId.NotFound", None, Terminal),
        ("StopAIAgentInstance", 400, "Instance.NotExist", None, NotFound),
        ("StopAIAgentInstance", 404, "AgentNotFound", None, Terminal),
        ("StopAIAgentInstance", 400, "InvalidParameter", None, Terminal),
    ],
)
def test_classify(
    action: str, status: int, code: str, retry_after: float | None, kind: type[ProviderError]
) -> None:
    assert type(classify(action, status, code, "m", retry_after)) is kind


def test_retry_after_is_milliseconds_and_only_positive_counts() -> None:
    assert parse_retry_after_ms("1500") == 1.5
    assert parse_retry_after_ms("0") is None
    assert parse_retry_after_ms("soon") is None
    assert parse_retry_after_ms(None) is None


def test_bad_settings_are_named() -> None:
    with pytest.raises(SettingsError, match="endpoint"):
        AliyunClient("ice.cn-shanghai.aliyuncs.com", AK, "s")
    with pytest.raises(SettingsError, match="credentials"):
        AliyunClient("https://ice.cn-shanghai.aliyuncs.com", AK, "")
