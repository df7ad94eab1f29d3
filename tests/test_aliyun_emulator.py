"""The emulator's Alibaba Cloud side over HTTP: gateway checks, business rules, the shared
port, and the inspection endpoints."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from aliyun_helpers import AGENT, AK, ARTC, SK, emulator_kwargs, start_params, token

from reconciler.emulator.server import EmulatorServer
from reconciler.providers.aliyun.auth_token import make_auth_token
from reconciler.providers.aliyun.client import query_value
from reconciler.providers.aliyun.signing import AcsAuth, encode_query
from reconciler.settings import ArtcApp


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(**emulator_kwargs()) as server:
        yield server


@pytest.fixture
def http(emulator: EmulatorServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emulator.url, timeout=5.0) as client:
        yield client


def signed(
    http: httpx.Client,
    action: str,
    params: dict[str, Any],
    *,
    version: str = "2020-11-09",
    nonce: str | None = None,
) -> httpx.Request:
    query = encode_query((k, query_value(v)) for k, v in params.items())
    request = http.build_request(
        "POST", f"/?{query}", headers={"x-acs-action": action, "x-acs-version": version}
    )
    auth = AcsAuth(AK, SK) if nonce is None else AcsAuth(AK, SK, nonce=lambda: nonce)
    return next(auth.auth_flow(request))


def call(http: httpx.Client, action: str, params: dict[str, Any], **kw: Any) -> tuple[int, Any]:
    response = http.send(signed(http, action, params, **kw))
    return response.status_code, response.json()


def test_errors_carry_the_documented_shape(http: httpx.Client) -> None:
    status, body = call(http, "StopAIAgentInstance", {"InstanceId": "nope"})
    assert status == 404
    assert set(body) == {"RequestId", "HostId", "Code", "Message", "Recommend"}
    assert body["Code"] == "InvalidInstanceId.NotFound"


def test_a_replayed_nonce_is_refused(http: httpx.Client) -> None:
    assert call(http, "GetAIAgentConcurrency", {"AIAgentId": AGENT}, nonce="n" * 32)[0] == 200
    status, body = call(http, "GetAIAgentConcurrency", {"AIAgentId": AGENT}, nonce="n" * 32)
    assert (status, body["Code"]) == (400, "SignatureNonceUsed")


def test_a_body_that_does_not_match_its_hash_is_refused(http: httpx.Client) -> None:
    prepared = signed(http, "GetAIAgentConcurrency", {"AIAgentId": AGENT})
    headers = {k: v for k, v in prepared.headers.items() if k.lower() != "content-length"}
    tampered = httpx.Request("POST", prepared.url, headers=headers, content=b"extra")
    response = http.send(tampered)
    assert (response.status_code, response.json()["Code"]) == (400, "ContentSHA256NotMatched")


def test_unknown_actions_and_versions(http: httpx.Client) -> None:
    assert call(http, "RunInstances", {})[1]["Code"] == "InvalidAction.NotFound"
    assert (
        call(http, "GetAIAgentConcurrency", {}, version="2019-01-01")[1]["Code"] == "InvalidVersion"
    )


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"RuntimeConfig": {"ChannelId": "ch-1", "AgentUserId": "agent-1"}}, "MissingParameter"),
        ({"RuntimeConfig": None}, "MissingParameter"),
        ({"AgentConfig": "[1]"}, "InvalidParameter"),
        (
            {"RuntimeConfig": {"ChannelId": "ch-1", "AgentUserId": "agent-1", "AuthToken": "x"}},
            "InvalidParameter.AuthToken",
        ),
    ],
)
def test_start_parameters_are_checked(
    http: httpx.Client, change: dict[str, Any], code: str
) -> None:
    params = {**start_params(), **change}
    params = {k: v for k, v in params.items() if v is not None}
    assert call(http, "StartAIAgentInstance", params)[1]["Code"] == code


@pytest.mark.parametrize(
    "auth_token",
    [
        token("ch-1", "agent-1", valid_for=-1),  # expired
        token("ch-1", "agent-1", app=ArtcApp(ARTC.app_id, "another-key")),  # not genuine
        token("ch-1", "agent-1", app=ArtcApp("another-app", ARTC.app_key)),  # another app
        token("ch-1", "someone-else"),  # another seat
        make_auth_token(ARTC.app_id, ARTC.app_key, "ch-2", "agent-1", 2**40),  # another channel
    ],
)
def test_the_auth_token_must_be_genuine_current_and_for_this_seat(
    http: httpx.Client, auth_token: str
) -> None:
    params = start_params()
    params["RuntimeConfig"]["AuthToken"] = auth_token
    status, body = call(http, "StartAIAgentInstance", params)
    assert (status, body["Code"]) == (400, "InvalidParameter.AuthToken")


def test_paging_limits(http: httpx.Client) -> None:
    for n in range(3):
        call(http, "StartAIAgentInstance", start_params(f"ch-{n}"))
    page = call(http, "ListAIAgentInstance", {"AIAgentId": AGENT, "PageSize": 2, "PageNumber": 2})
    assert len(page[1]["Instances"]) == 1
    assert call(http, "ListAIAgentInstance", {"AIAgentId": AGENT, "PageSize": 101})[0] == 400
    assert call(http, "ListAIAgentInstance", {"AIAgentId": AGENT, "PageNumber": 0})[0] == 400
    assert len(call(http, "ListAIAgentInstance", {"AIAgentId": AGENT})[1]["Instances"]) == 3


def test_speech_text_is_limited_to_1024(http: httpx.Client) -> None:
    instance_id = call(http, "StartAIAgentInstance", start_params())[1]["InstanceId"]
    ok = call(http, "SendAIAgentSpeech", {"InstanceId": instance_id, "Text": "x" * 1024})
    long = call(http, "SendAIAgentSpeech", {"InstanceId": instance_id, "Text": "x" * 1025})
    assert ok[0] == 200 and long[1]["Code"] == "InvalidParameter"


def test_both_clouds_share_the_port_and_the_inspection_endpoints(
    http: httpx.Client, emulator: EmulatorServer
) -> None:
    instance_id = call(http, "StartAIAgentInstance", start_params())[1]["InstanceId"]
    # A request without x-acs-action is Volcengine's (unsigned here: refused as such).
    volc = http.post("/?Action=StartVoiceChat&Version=2024-12-01", content=b"{}")
    assert volc.json()["ResponseMetadata"]["Error"]["Code"] == "MissingRequestInfo"
    assert http.get("/_emulator/calls").json()["by_action"] == {"StartVoiceChat": 1}
    assert http.get("/_emulator/aliyun/calls").json()["by_action"] == {"StartAIAgentInstance": 1}
    assert http.get("/_emulator/volcengine/tasks").json() == {"tasks": []}

    [listed] = http.get("/_emulator/aliyun/instances").json()["instances"]
    assert listed["InstanceId"] == instance_id and listed["Status"] == "Created"
    assert http.post("/_emulator/aliyun/join", json={"InstanceId": instance_id}).json() == {
        "joined": True
    }
    ended = http.post(
        "/_emulator/aliyun/end-instance", json={"InstanceId": instance_id, "HangupRole": 1}
    )
    assert ended.json() == {"ended": True}
    again = http.post("/_emulator/aliyun/end-instance", json={"InstanceId": instance_id})
    assert again.json() == {"ended": False}
    [finished] = emulator.aliyun.instances()
    assert finished["CallInfo"]["HangupRole"] == 1
    bad = http.post(
        "/_emulator/aliyun/end-instance", json={"InstanceId": instance_id, "HangupRole": 7}
    )
    assert bad.status_code == 400
    assert http.post("/_emulator/aliyun/end-instance", json={}).status_code == 400
    assert http.get("/_emulator/aliyun/nothing").status_code == 404

    assert http.post("/_emulator/aliyun/finish-after", json={"seconds": 0}).status_code == 200
    second = call(http, "StartAIAgentInstance", start_params("ch-2"))[1]["InstanceId"]
    _, body = call(http, "DescribeAIAgentInstance", {"InstanceId": second})
    assert body["Instance"]["Status"] == "Finished"

    # Faults set without a provider apply to both clouds; reset forgets both.
    http.post("/_emulator/faults", json={"error_503_rate": 1})
    assert emulator.aliyun.faults.error_503_rate == 1 and emulator.faults.error_503_rate == 1
    http.post("/_emulator/aliyun/faults", json={})
    assert emulator.aliyun.faults.error_503_rate == 0 and emulator.faults.error_503_rate == 1
    assert http.post("/_emulator/reset").status_code == 200
    assert emulator.aliyun.instances() == [] and emulator.aliyun.calls()["total"] == 0
    assert emulator.faults.error_503_rate == 0


def test_the_cli_serves_aliyun_with_the_artc_app_it_is_given(tmp_path: Any) -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "reconciler",
            "emulator",
            "--port",
            "0",
            "--access-key-id",
            AK,
            "--secret-access-key",
            SK,
            "--artc-app-id",
            ARTC.app_id,
            "--artc-app-key",
            ARTC.app_key,
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip().removeprefix("emulator listening on ")
        with httpx.Client(base_url=url, timeout=5.0) as http:
            status, body = call(http, "StartAIAgentInstance", start_params())
        assert status == 200 and body["InstanceId"], json.dumps(body)
        process.terminate()
        assert process.wait(timeout=10) == 0
    finally:
        process.kill()
        process.wait()
