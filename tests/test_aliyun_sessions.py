"""AliyunSessions, the provider the engine sees, against the emulator over real sockets."""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aliyun_helpers import AGENT, AK, ARTC, SK, emulator_kwargs, make_client, make_sessions, spec

from reconciler.core.model import Announcement
from reconciler.emulator.server import EmulatorServer
from reconciler.errors import NotFound, Terminal, Transient
from reconciler.providers.aliyun.auth_token import read_auth_token, token_is_genuine
from reconciler.providers.aliyun.sessions import AliyunSessions, update_params
from reconciler.providers.base import (
    Liveness,
    ObservingProvider,
    Owner,
    SpecChange,
)
from reconciler.workspace import utc_now

pytestmark = pytest.mark.anyio
OWNER = Owner("lineage-1", "front-desk", "attempt-1")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(**emulator_kwargs()) as server:
        yield server


@pytest.fixture
async def sessions(emulator: EmulatorServer) -> AsyncIterator[AliyunSessions]:
    provider = make_sessions(emulator.url)
    yield provider
    await provider.aclose()


def test_it_is_an_observing_provider(emulator: EmulatorServer) -> None:
    assert isinstance(make_sessions(emulator.url), ObservingProvider)


async def test_start_makes_the_token_and_tags_user_data(
    sessions: AliyunSessions, emulator: EmulatorServer
) -> None:
    ids = await sessions.start(spec(), OWNER)
    [stored] = emulator.aliyun.instances()
    assert ids == {"InstanceId": stored["InstanceId"]}
    assert json.loads(stored["UserData"]) == {"tenant": "acme", "reconciler": OWNER.as_tag()}


async def test_the_token_is_genuine_for_the_seat_and_lasts_a_day() -> None:
    sent: list[dict[str, str]] = []

    def cloud(action: str, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        sent.append(query)
        return 200, {"InstanceId": "i-1"}

    with _ScriptedCloud(cloud) as url:
        provider = AliyunSessions(make_client(url), ARTC, epoch_clock=lambda: 1_700_000_000.0)
        await provider.start(spec(), OWNER)
        await provider.aclose()
    claims = read_auth_token(json.loads(sent[0]["RuntimeConfig"])["AuthToken"])
    assert token_is_genuine(claims, ARTC.app_key)
    assert (claims.app_id, claims.channel_id, claims.user_id) == (ARTC.app_id, "ch-1", "agent-1")
    assert claims.expires_at == 1_700_000_000 + 24 * 3600


async def test_observe_running_then_ended_by_the_user(
    sessions: AliyunSessions, emulator: EmulatorServer
) -> None:
    ids = await sessions.start(spec(), OWNER)
    created = await sessions.observe(ids)
    assert (created.liveness, created.status) == (Liveness.RUNNING, "Created")
    emulator.aliyun.join(ids["InstanceId"])
    assert (await sessions.observe(ids)).status == "Executing"
    assert emulator.aliyun.end_instance(ids["InstanceId"], hangup_role=1)
    ended = await sessions.observe(ids)
    assert (ended.liveness, ended.status, ended.reason) == (
        Liveness.ENDED,
        "Finished",
        "the user hung up",
    )
    assert ended.ended_at is not None and ended.ended_at.endswith("Z")


async def test_instances_finish_by_themselves_after_the_knob(
    sessions: AliyunSessions, emulator: EmulatorServer
) -> None:
    ids = await sessions.start(spec(), OWNER)
    emulator.aliyun.set_finish_after(0)
    observed = await sessions.observe(ids)
    assert observed.liveness is Liveness.ENDED and observed.reason == "the system ended the call"


async def test_an_unknown_instance_is_no_longer_known(sessions: AliyunSessions) -> None:
    observed = await sessions.observe({"InstanceId": "gone"})
    assert (observed.liveness, observed.reason) == (Liveness.ENDED, "no longer known to the cloud")


async def test_stop_then_stop_again_is_not_found(sessions: AliyunSessions) -> None:
    ids = await sessions.start(spec(), OWNER)
    await sessions.stop(ids)
    with pytest.raises(NotFound):
        await sessions.stop(ids)
    with pytest.raises(NotFound):
        await sessions.stop({"InstanceId": "never-started"})


async def test_a_not_found_stop_that_describe_contradicts_is_retried() -> None:
    def cloud(action: str, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if action == "StopAIAgentInstance":
            return 404, {"Code": "InvalidInstanceId.NotFound", "Message": "no"}
        return 200, {"Instance": {"Status": "Executing"}}

    with _ScriptedCloud(cloud) as url:
        provider = AliyunSessions(make_client(url), ARTC)
        with pytest.raises(Transient, match="Executing"):
            await provider.stop({"InstanceId": "i-1"})
        await provider.aclose()


async def test_update_sends_only_the_changed_fields(
    sessions: AliyunSessions, emulator: EmulatorServer
) -> None:
    ids = await sessions.start(spec(), OWNER)
    new = spec()
    new["AgentConfig"] = {**new["AgentConfig"], "TtsConfig": {"VoiceId": "xiaoyun"}, "Volume": 300}
    await sessions.update(
        ids, SpecChange(new, ("/AgentConfig/TtsConfig/VoiceId", "/AgentConfig/Volume"))
    )
    [stored] = emulator.aliyun.instances()
    assert [json.loads(u["AgentConfig"]) for u in stored["Updates"]] == [
        {"TtsConfig": {"VoiceId": "xiaoyun"}, "Volume": 300}
    ]
    assert stored["AgentConfig"]["Greeting"] == "Hello!"


def test_update_params_nest_pointers_and_refuse_what_is_not_in_place() -> None:
    new = {"AgentConfig": {"LlmConfig": {"BailianAppParams": {"a": 1}}, "Greeting": "x"}}
    change = SpecChange(new, ("/AgentConfig/LlmConfig/BailianAppParams", "/AgentConfig/Volume"))
    assert update_params(change) == {
        "AgentConfig": {"LlmConfig": {"BailianAppParams": {"a": 1}}, "Volume": None}
    }
    with pytest.raises(Terminal, match="/RuntimeConfig/ChannelId"):
        update_params(SpecChange(new, ("/RuntimeConfig/ChannelId",)))


async def test_announce_speaks_and_refuses_long_text_before_sending(
    sessions: AliyunSessions, emulator: EmulatorServer
) -> None:
    ids = await sessions.start(spec(), OWNER)
    await sessions.announce(ids, Announcement("a1", "We close at six.", interrupt_mode=1))
    calls = emulator.aliyun.calls()["total"]
    with pytest.raises(Terminal, match="1024"):
        await sessions.announce(ids, Announcement("a2", "x" * 1025))
    assert emulator.aliyun.calls()["total"] == calls
    [stored] = emulator.aliyun.instances()
    assert stored["Speeches"] == [{"Text": "We close at six.", "EnableInterrupt": "true"}]


async def test_list_live_reads_every_page_and_our_tags(
    sessions: AliyunSessions, emulator: EmulatorServer
) -> None:
    for n in range(105):
        await sessions.start(spec(f"ch-{n}"), Owner("lineage-1", f"s{n}", "a"))
    untagged = spec("ch-x")
    untagged["UserData"] = {}
    await sessions.start(untagged, OWNER)
    finished = await sessions.start(spec("ch-done"), OWNER)
    await sessions.stop(finished)
    assert len(emulator.aliyun.instances()) == 107  # the cloud still lists the finished one
    live = await sessions.list_live({"AIAgentId": AGENT})
    assert len(live) == 106
    assert live[0].identity == {"AIAgentId": AGENT, "ChannelId": "ch-0", "AgentUserId": "agent-1"}
    assert live[0].owner == Owner("lineage-1", "s0", "a")
    assert {s.owner for s in live if s.identity["ChannelId"] == "ch-x"} == {OWNER}
    assert all(s.identity["ChannelId"] != "ch-done" for s in live)


async def test_a_restart_into_the_same_seat_leaves_one_live_instance(
    sessions: AliyunSessions,
) -> None:
    await sessions.start(spec(), Owner("lineage-1", "front-desk", "attempt-1"))
    await sessions.start(spec(), Owner("lineage-1", "front-desk", "attempt-2"))
    live = await sessions.list_live({"AIAgentId": AGENT})
    assert [s.owner.attempt for s in live if s.owner] == ["attempt-2"]


# -- a scripted cloud, for answers the emulator never gives --------------------------------------


class _ScriptedCloud:
    """A real HTTP server answering each action with what `script(action, query)` returns."""

    def __init__(self, script: Any) -> None:
        handler = type("Handler", (_ScriptedHandler,), {"script": staticmethod(script)})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> str:
        self._thread.start()
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


class _ScriptedHandler(BaseHTTPRequestHandler):
    script: Any

    def do_POST(self) -> None:
        from reconciler.providers.aliyun.signing import decode_query

        query = dict(decode_query(self.path.partition("?")[2]))
        status, payload = self.script(self.headers["x-acs-action"], query)
        body = json.dumps({"RequestId": "req-1", **payload}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


async def test_from_settings_reaches_the_configured_endpoint(emulator: EmulatorServer) -> None:
    from pydantic import SecretStr

    from reconciler.settings import AliyunSettings, Settings

    settings = Settings(
        aliyun=AliyunSettings(
            endpoint=emulator.url,
            access_key_id=AK,
            access_key_secret=SecretStr(SK),
            artc_app_id=ARTC.app_id,
            artc_app_key=SecretStr(ARTC.app_key),
        )
    )
    provider = AliyunSessions.from_settings(settings, max_connections=4)
    try:
        ids = await provider.start(spec(), OWNER)
        assert (await provider.observe(ids)).liveness is Liveness.RUNNING
    finally:
        await provider.aclose()


def test_from_settings_names_a_missing_artc_app(emulator: EmulatorServer) -> None:
    from pydantic import SecretStr

    from reconciler.errors import SettingsError
    from reconciler.settings import AliyunSettings, Settings

    settings = Settings(
        aliyun=AliyunSettings(
            endpoint=emulator.url, access_key_id=AK, access_key_secret=SecretStr(SK)
        )
    )
    with pytest.raises(SettingsError, match="RECONCILER_ALIYUN__ARTC_APP_ID"):
        AliyunSessions.from_settings(settings, max_connections=4)


async def test_observation_times_are_written_as_the_rest_of_the_project_writes_them(
    sessions: AliyunSessions, emulator: EmulatorServer
) -> None:
    # `Z`, to the second, from the provider's own clock: the spelling of plans and the journal.
    ids = await sessions.start(spec(), OWNER)
    provider = AliyunSessions(make_client(emulator.url), ARTC, epoch_clock=lambda: 1_700_000_000.0)
    try:
        running = await provider.observe(ids)
        gone = await provider.observe({"InstanceId": "gone"})
    finally:
        await provider.aclose()
    assert running.observed_at == gone.observed_at == "2023-11-14T22:13:20Z"
    assert utc_now()[-1] == "Z" and len(utc_now()) == len(running.observed_at)
