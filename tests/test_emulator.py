"""The Volcengine emulator over real sockets: the wire answers, the faults, the test endpoints."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from reconciler.emulator.server import EmulatorServer
from reconciler.emulator.volcengine import ALREADY_STARTED_MESSAGE, Faults, TokenBucket
from reconciler.providers.volcengine.signing import VolcengineAuth

_SSL_CONTEXT = ssl.create_default_context()
AK = "AKLTemulatortest"
SK = "emulator-secret-key"
APP = "661e4b8f2f1d3c0123456789"


def start_body(task: str = "task1", **agent: Any) -> dict[str, Any]:
    return {
        "AppId": APP,
        "RoomId": "room1",
        "TaskId": task,
        "Config": {
            "ASRConfig": {"Provider": "volcano", "ProviderParams": {"Mode": "smallmodel"}},
            "TTSConfig": {"Provider": "volcano", "ProviderParams": {"app": {"token": "tts-tok"}}},
            "LLMConfig": {"Mode": "CustomLLM", "Url": "http://llm", "APIKey": "sk-live-123"},
        },
        "AgentConfig": {"TargetUserId": ["user1"], "UserId": "bot1", **agent},
    }


def ids(task: str = "task1") -> dict[str, str]:
    return {"AppId": APP, "RoomId": "room1", "TaskId": task}


class Cloud:
    """Signed calls to one emulator, returning (status, parsed JSON)."""

    def __init__(self, server: EmulatorServer, auth: VolcengineAuth | None = None) -> None:
        self.server = server
        self.auth = auth or VolcengineAuth(AK, SK, "cn-north-1")
        # Sharing the transport's SSL context keeps client creation cheap (no TLS is used).
        self.http = httpx.Client(base_url=server.url, timeout=5.0, verify=_SSL_CONTEXT)

    def call(
        self, action: str, body: dict[str, Any], version: str = "2024-12-01"
    ) -> tuple[int, dict[str, Any]]:
        response = self.http.post(
            "/",
            params={"Action": action, "Version": version},
            content=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            auth=self.auth,
        )
        return response.status_code, response.json()

    def error(self, action: str, body: dict[str, Any], **kw: Any) -> tuple[int, dict[str, Any]]:
        status, payload = self.call(action, body, **kw)
        return status, payload["ResponseMetadata"]["Error"]


@pytest.fixture
def server() -> Iterator[EmulatorServer]:
    with EmulatorServer(access_key_id=AK, secret_access_key=SK) as emulator:
        yield emulator


@pytest.fixture
def cloud(server: EmulatorServer) -> Iterator[Cloud]:
    c = Cloud(server)
    yield c
    c.http.close()


# -- the API ---------------------------------------------------------------------------------------


def test_start_answers_ok_and_keeps_the_full_body(cloud: Cloud, server: EmulatorServer) -> None:
    status, payload = cloud.call("StartVoiceChat", start_body())
    assert status == 200
    assert payload["Result"] == "ok"
    meta = payload["ResponseMetadata"]
    assert meta["Action"] == "StartVoiceChat" and meta["Version"] == "2024-12-01"
    assert meta["Service"] == "rtc" and meta["Region"] == "cn-north-1" and meta["RequestId"]
    assert "Error" not in meta
    [task] = server.tasks()
    assert (task["AppId"], task["RoomId"], task["TaskId"]) == (APP, "room1", "task1")
    assert task["Body"] == start_body()
    assert task["Updates"] == []


def test_duplicate_start_is_refused_with_the_documented_message(cloud: Cloud) -> None:
    cloud.call("StartVoiceChat", start_body())
    status, error = cloud.error("StartVoiceChat", start_body())
    assert status == 400
    assert error["Code"] == "InvalidParameter.TaskAlreadyExists"
    assert error["Message"] == ALREADY_STARTED_MESSAGE


def test_stop_then_stop_again_is_not_found(cloud: Cloud, server: EmulatorServer) -> None:
    cloud.call("StartVoiceChat", start_body())
    assert cloud.call("StopVoiceChat", ids())[0] == 200
    assert server.tasks() == []
    status, error = cloud.error("StopVoiceChat", ids())
    assert (status, error["Code"]) == (400, "InvalidParameter.ErrorActiveTaskNotFound")


def test_codes_of_unconfirmed_answers_are_configurable() -> None:
    with EmulatorServer(
        access_key_id=AK,
        secret_access_key=SK,
        already_started_code="AlreadyStarted",
        not_found_code="TaskNotExist",
    ) as emulator:
        cloud = Cloud(emulator)
        cloud.call("StartVoiceChat", start_body())
        assert cloud.error("StartVoiceChat", start_body())[1]["Code"] == "AlreadyStarted"
        assert (
            cloud.error("UpdateVoiceChat", {**ids("x"), "Command": "interrupt"})[1]["Code"]
            == "TaskNotExist"
        )
        cloud.http.close()


@pytest.mark.parametrize("command", ["interrupt", "Interrupt", "FinishSpeechRecognition"])
def test_update_accepts_commands_without_message(cloud: Cloud, command: str) -> None:
    cloud.call("StartVoiceChat", start_body())
    assert cloud.call("UpdateVoiceChat", {**ids(), "Command": command})[0] == 200


@pytest.mark.parametrize(
    "command",
    ["function", "FunctionCallResult", "ExternalPromptsForLLM", "ExternalTextToLLM"],
)
def test_update_commands_that_need_a_message(cloud: Cloud, command: str) -> None:
    cloud.call("StartVoiceChat", start_body())
    status, error = cloud.error("UpdateVoiceChat", {**ids(), "Command": command})
    assert (status, error["Code"], error["CodeN"]) == (400, "MissingParameter", 100002)
    assert cloud.call("UpdateVoiceChat", {**ids(), "Command": command, "Message": "m"})[0] == 200


def test_announcements_are_recorded_per_task(cloud: Cloud, server: EmulatorServer) -> None:
    cloud.call("StartVoiceChat", start_body())
    update = {**ids(), "Command": "ExternalTextToSpeech", "Message": "é" * 200, "InterruptMode": 2}
    assert cloud.call("UpdateVoiceChat", update)[0] == 200
    assert server.tasks()[0]["Updates"] == [update]


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        ({"Message": "x" * 201, "InterruptMode": 1}, "InvalidParameter"),
        ({"Message": "hi", "InterruptMode": 4}, "InvalidParameter"),
        ({"Message": "hi", "InterruptMode": 0}, "InvalidParameter"),
        ({"Message": "hi", "InterruptMode": True}, "InvalidParameter"),
        ({"Message": 5}, "InvalidParameter"),
        ({}, "MissingParameter"),
    ],
)
def test_update_text_to_speech_is_checked(cloud: Cloud, extra: dict[str, Any], code: str) -> None:
    cloud.call("StartVoiceChat", start_body())
    body = {**ids(), "Command": "ExternalTextToSpeech", **extra}
    status, error = cloud.error("UpdateVoiceChat", body)
    assert (status, error["Code"]) == (400, code)


def test_update_refuses_unknown_commands_and_missing_tasks(cloud: Cloud) -> None:
    cloud.call("StartVoiceChat", start_body())
    assert cloud.error("UpdateVoiceChat", {**ids(), "Command": "Reboot"})[1]["Code"] == (
        "InvalidParameter"
    )
    status, error = cloud.error("UpdateVoiceChat", {**ids("gone"), "Command": "interrupt"})
    assert (status, error["Code"]) == (400, "InvalidParameter.ErrorActiveTaskNotFound")


def without(body: dict[str, Any], *path: str) -> dict[str, Any]:
    copy: dict[str, Any] = json.loads(json.dumps(body))
    node = copy
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return copy


@pytest.mark.parametrize(
    ("body", "code", "code_n"),
    [
        (without(start_body(), "AppId"), "MissingParameter", 100002),
        (without(start_body(), "RoomId"), "MissingParameter", 100002),
        (without(start_body(), "TaskId"), "MissingParameter", 100002),
        (without(start_body(), "Config"), "MissingParameter", 100002),
        (without(start_body(), "AgentConfig"), "MissingParameter", 100002),
        (without(start_body(), "AgentConfig", "TargetUserId"), "MissingParameter", 100002),
        (without(start_body(), "AgentConfig", "UserId"), "MissingParameter", 100002),
        (without(start_body(), "Config", "LLMConfig", "Mode"), "MissingParameter", 100002),
        (without(start_body(), "Config", "LLMConfig", "Url"), "MissingParameter", 100002),
        (without(start_body(), "Config", "ASRConfig", "Provider"), "MissingParameter", 100002),
        ({**start_body(), "AppId": "short"}, "InvalidParameter", None),
        ({**start_body(), "RoomId": "room 1"}, "InvalidParameter", None),
        ({**start_body(), "TaskId": "t" * 129}, "InvalidParameter", None),
        ({**start_body(), "Config": "yes"}, "InvalidParameter", None),
        (start_body(TargetUserId=["a", "b"]), "InvalidParameter", None),
        (start_body(TargetUserId="user1"), "InvalidParameter", None),
        (start_body(UserId="user1"), "InvalidParameter", None),
    ],
)
def test_start_validates_documented_required_fields(
    cloud: Cloud, server: EmulatorServer, body: dict[str, Any], code: str, code_n: int | None
) -> None:
    status, error = cloud.error("StartVoiceChat", body)
    assert (status, error["Code"], error.get("CodeN")) == (400, code, code_n)
    assert server.tasks() == []


def test_a_body_that_is_not_a_json_object_is_invalid(cloud: Cloud) -> None:
    response = cloud.http.post(
        "/",
        params={"Action": "StopVoiceChat", "Version": "2024-12-01"},
        content=b"[1,2",
        auth=cloud.auth,
    )
    assert response.status_code == 400
    assert response.json()["ResponseMetadata"]["Error"]["Code"] == "InvalidParameter"


# -- the gateway -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "version"),
    [("DescribeVoiceChat", "2024-12-01"), ("StartVoiceChat", "2025-06-01"), ("", "")],
)
def test_unknown_action_or_version(cloud: Cloud, action: str, version: str) -> None:
    status, error = cloud.error(action, start_body(), version=version)
    assert (status, error["Code"], error["CodeN"]) == (404, "InvalidActionOrVersion", 100008)


def test_api_version_is_configurable() -> None:
    with EmulatorServer(access_key_id=AK, secret_access_key=SK, api_version="2025-06-01") as e:
        cloud = Cloud(e)
        assert cloud.call("StartVoiceChat", start_body(), version="2025-06-01")[0] == 200
        assert cloud.call("StopVoiceChat", ids())[0] == 404
        cloud.http.close()


@pytest.mark.parametrize(
    ("auth", "status", "code", "code_n"),
    [
        (VolcengineAuth(AK, "wrong", "cn-north-1"), 401, "SignatureDoesNotMatch", 100010),
        (VolcengineAuth("AKLTnobody", SK, "cn-north-1"), 401, "InvalidAccessKey", 100009),
        (VolcengineAuth(AK, SK, "cn-beijing"), 400, "InvalidCredential", None),
        (
            VolcengineAuth(AK, SK, "cn-north-1", session_token="tok"),
            401,
            "InvalidSecretToken",
            None,
        ),
        (
            VolcengineAuth(
                AK, SK, "cn-north-1", clock=lambda: datetime.now(UTC) - timedelta(hours=1)
            ),
            400,
            "InvalidTimestamp",
            100006,
        ),
    ],
)
def test_signature_failures(
    server: EmulatorServer, auth: VolcengineAuth, status: int, code: str, code_n: int | None
) -> None:
    cloud = Cloud(server, auth)
    got_status, error = cloud.error("StartVoiceChat", start_body())
    assert (got_status, error["Code"], error.get("CodeN")) == (status, code, code_n)
    assert SK not in error["Message"]
    assert server.tasks() == []
    cloud.http.close()


def test_unsigned_request_is_missing_request_info(cloud: Cloud) -> None:
    response = cloud.http.post("/", params={"Action": "StopVoiceChat", "Version": "2024-12-01"})
    assert response.status_code == 400
    assert response.json()["ResponseMetadata"]["Error"]["CodeN"] == 100004


def test_sts_credentials_need_their_token() -> None:
    with EmulatorServer(access_key_id=AK, secret_access_key=SK, session_token="sts-tok") as e:
        good = Cloud(e, VolcengineAuth(AK, SK, "cn-north-1", session_token="sts-tok"))
        assert good.call("StartVoiceChat", start_body())[0] == 200
        for token in (None, "sts-other"):
            bad = Cloud(e, VolcengineAuth(AK, SK, "cn-north-1", session_token=token))
            status, error = bad.error("StopVoiceChat", ids())
            assert (status, error["Code"]) == (401, "InvalidSecretToken")
            bad.http.close()
        good.http.close()


# -- faults ----------------------------------------------------------------------------------------


def test_qps_cap_throttles_without_effect(cloud: Cloud, server: EmulatorServer) -> None:
    # A bucket of one token that refills over ~17 minutes: the second call is over the cap.
    server.set_faults(Faults(qps=0.001, retry_after=2))
    assert cloud.call("StartVoiceChat", start_body("a"))[0] == 200
    response = cloud.http.post(
        "/",
        params={"Action": "StartVoiceChat", "Version": "2024-12-01"},
        content=json.dumps(start_body("b")).encode(),
        auth=cloud.auth,
    )
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "2"
    assert response.json()["ResponseMetadata"]["Error"]["Code"] == "FlowLimitExceeded"
    assert [t["TaskId"] for t in server.tasks()] == ["a"]
    calls = server.calls()
    assert calls["throttled"] == 1 and calls["by_outcome"]["FlowLimitExceeded"] == 1


def test_token_bucket_allows_one_second_of_burst() -> None:
    now = [0.0]
    bucket = TokenBucket(5.0, lambda: now[0])
    assert [bucket.take() for _ in range(6)] == [True] * 5 + [False]
    now[0] = 0.2
    assert [bucket.take(), bucket.take()] == [True, False]
    now[0] = 100.0
    assert sum(bucket.take() for _ in range(10)) == 5


@pytest.mark.parametrize(
    ("knob", "status", "code"),
    [
        ("error_500_rate", 500, "InternalError"),
        ("error_502_rate", 502, "InternalServiceError"),
        ("error_503_rate", 503, "ServiceUnavailableTemp"),
        ("error_429_rate", 429, "FlowLimitExceeded"),
    ],
)
def test_injected_errors_take_no_effect(
    cloud: Cloud, server: EmulatorServer, knob: str, status: int, code: str
) -> None:
    server.set_faults(Faults.from_json({knob: 1.0}))
    got_status, error = cloud.error("StartVoiceChat", start_body())
    assert (got_status, error["Code"]) == (status, code)
    assert server.tasks() == []
    assert server.calls()["throttled"] == 0


def test_late_504_takes_effect(cloud: Cloud, server: EmulatorServer) -> None:
    server.set_faults(Faults(late_504_rate=1.0))
    status, error = cloud.error("StartVoiceChat", start_body())
    assert (status, error["Code"], error["CodeN"]) == (504, "InternalServiceTimeout", 100016)
    assert len(server.tasks()) == 1


def test_lost_response_takes_effect_and_closes_the_connection(
    cloud: Cloud, server: EmulatorServer
) -> None:
    server.set_faults(Faults(lost_response_rate=1.0))
    with pytest.raises(httpx.RemoteProtocolError):
        cloud.call("StartVoiceChat", start_body())
    assert len(server.tasks()) == 1
    assert server.calls()["by_outcome"] == {"lost_response": 1}


def test_seeded_faults_repeat(cloud: Cloud, server: EmulatorServer) -> None:
    def outcomes() -> list[int]:
        server.reset()
        server.set_faults(Faults(error_503_rate=0.5, seed=7))
        return [cloud.call("StopVoiceChat", ids())[0] for _ in range(20)]

    first = outcomes()
    assert first == outcomes()
    assert set(first) == {400, 503}


def test_faults_are_validated() -> None:
    with pytest.raises(ValueError):
        Faults(error_500_rate=0.6, error_503_rate=0.6)
    with pytest.raises(ValueError):
        Faults(qps=0)
    with pytest.raises(ValueError):
        Faults.from_json({"error_rate": 0.1})
    # thirds of one rate may sum to a hair above 1
    Faults(error_500_rate=0.1, error_502_rate=0.1, error_503_rate=0.1, error_429_rate=0.7)


# -- the test endpoints ----------------------------------------------------------------------------


def test_inspection_endpoints_show_and_never_mutate(cloud: Cloud) -> None:
    cloud.call("StartVoiceChat", start_body())
    cloud.call("UpdateVoiceChat", {**ids(), "Command": "interrupt"})
    cloud.call("StartVoiceChat", start_body())
    for _ in range(2):
        tasks = cloud.http.get("/_emulator/tasks").json()["tasks"]
        assert [t["TaskId"] for t in tasks] == ["task1"]
        assert tasks[0]["Body"]["Config"]["LLMConfig"]["APIKey"] == "sk-live-123"
        assert tasks[0]["Updates"] == [{**ids(), "Command": "interrupt"}]
        calls = cloud.http.get("/_emulator/calls").json()
        assert calls == {
            "total": 3,
            "throttled": 0,
            "by_action": {"StartVoiceChat": 2, "UpdateVoiceChat": 1},
            "by_outcome": {"ok": 2, "InvalidParameter.TaskAlreadyExists": 1},
        }


def test_control_endpoints_set_faults_and_reset(cloud: Cloud, server: EmulatorServer) -> None:
    response = cloud.http.post("/_emulator/faults", json={"error_503_rate": 1, "latency": 0})
    assert response.status_code == 200 and response.json()["error_503_rate"] == 1
    assert server.faults == Faults(error_503_rate=1.0)
    assert cloud.call("StartVoiceChat", start_body())[0] == 503
    bad = cloud.http.post("/_emulator/faults", json={"error_503_rate": 2})
    assert bad.status_code == 400 and "error_503_rate" in bad.json()["error"]
    assert cloud.http.post("/_emulator/faults", json={"nope": 1}).status_code == 400
    assert cloud.http.post("/_emulator/reset").status_code == 200
    assert server.faults == Faults()
    assert server.calls()["total"] == 0
    assert cloud.call("StartVoiceChat", start_body())[0] == 200
    ended = cloud.http.post("/_emulator/end-task", json=ids())
    assert ended.json() == {"ended": True} and server.tasks() == []
    assert cloud.http.get("/_emulator/nothing").status_code == 404


def test_stop_closes_keep_alive_connections(cloud: Cloud, server: EmulatorServer) -> None:
    assert cloud.call("StartVoiceChat", start_body())[0] == 200
    server.stop()
    with pytest.raises(httpx.TransportError):
        cloud.call("StopVoiceChat", ids())


def test_run_emulator_announces_and_stops_on_sigterm() -> None:
    code = (
        "from reconciler.emulator.server import run_emulator\n"
        f"run_emulator(0, {AK!r}, {SK!r}, 'cn-north-1', '2024-12-01', None)\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"},  # prove the flush
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line.startswith("emulator listening on http://127.0.0.1:")
        url = line.removeprefix("emulator listening on ")
        assert httpx.get(f"{url}/_emulator/calls").json()["total"] == 0
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        process.kill()
        process.wait()
