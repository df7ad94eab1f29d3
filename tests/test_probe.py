"""`reconciler probe` and `apply --probe` against real endpoints on 127.0.0.1.

Each wrong behaviour is one session's endpoint, and each must be reported for its own session
only; the key must reach the endpoints and never the output.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from apply_helpers import (
    SECRET_ENV,
    SECRET_VALUES,
    Workspace,
    aliyun_session,
    session,
)
from llm_endpoints import BEHAVIOURS, LlmEndpoints

from reconciler.core.llm_probe import probe_request
from reconciler.emulator.custom_llm import CUSTOM_LLM_PATH, CustomLlm
from reconciler.emulator.server import EmulatorServer
from reconciler.probe import probe_all

KEY = SECRET_ENV["TEST_LLM_API_KEY"]
TIMEOUT = "3"  # long enough for a good local endpoint on a busy machine; the slow one waits 30


@pytest.fixture
def endpoints() -> Iterator[LlmEndpoints]:
    with LlmEndpoints() as served:
        yield served


def llm_session(name: str, url: str, **llm: Any) -> dict[str, Any]:
    entry = session(name)
    entry["spec"]["Config"]["LLMConfig"].update({"Url": url, **llm})
    return entry


def lines_by_session(out: str) -> dict[str, str]:
    found = {}
    for line in out.splitlines():
        if line[:2] in ("✓ ", "✗ ", "- "):
            found[line[2:].split(":", 1)[0]] = line
    return found


def test_each_endpoint_is_judged_for_its_own_session(
    ws: Workspace, endpoints: LlmEndpoints
) -> None:
    sessions = [llm_session(b, endpoints.url(b)) for b in BEHAVIOURS]
    sessions.append(llm_session("good-too", endpoints.url("good")))
    ark = session("ark")
    ark["spec"]["Config"]["LLMConfig"] = {"Mode": "ArkV3", "EndPointId": "ep-1"}
    ws.declare([*sessions, ark])

    result = ws.run_here("probe", str(ws.manifests), "--timeout", TIMEOUT)

    assert result.code == 1, str(result)
    lines = lines_by_session(result.out)
    assert set(lines) == {*BEHAVIOURS, "good-too", "ark"}
    expected = {
        "good": "✓ good: ok (",
        "good-too": "✓ good-too: ok (",
        "slow": "timeout: no answer within 3 s",
        "silent": "timeout: HTTP 200 but no data within 3 s",
        "stall": "timeout: the stream went quiet for 3 s after 1 chunk(s), before [DONE]",
        "unauthorized": 'HTTP 401: {"error": "bad Bearer ***"}',
        "wrong-type": "Content-Type is 'application/json', not text/event-stream",
        "no-done": "the stream ended after 2 chunk(s) without data: [DONE]",
        "malformed": "chunk 2 (line 3) is not JSON",
        "wrong-object": "chunk 1 (line 1): `object` is 'chat.completion'",
        "ark": "- ark: not probed: no CustomLLM endpoint (LLMConfig.Mode is ArkV3)",
    }
    for name, text in expected.items():
        assert text in lines[name], lines[name]
    bad = set(BEHAVIOURS) - {"good"}
    assert all(lines[name].startswith("✗ ") for name in bad)
    assert "first byte" in lines["good"] and "[DONE]" in lines["good"]
    assert "Probe: 9 endpoint call(s) for 10 session(s): 2 good, 8 bad" in result.out

    # One call per endpoint, however many sessions share it; the key reached each one.
    assert len(endpoints.received("good")) == 1
    for behaviour in BEHAVIOURS:
        (call,) = endpoints.received(behaviour)
        assert call["headers"]["Authorization"] == f"Bearer {KEY}"
        assert call["body"]["stream"] is True
        assert call["headers"]["Content-Type"] == "application/json"
    for secret in SECRET_VALUES:
        assert secret not in result.out + result.err


def test_the_session_parameters_reach_the_endpoint(ws: Workspace, endpoints: LlmEndpoints) -> None:
    ws.declare(
        [
            llm_session(
                "a",
                endpoints.url("good"),
                ModelName="support-v2",
                TopP=0.8,
                MaxTokens=100,
                Custom='{"tenant": "acme"}',
            ),
            # Another model on the same URL is another request: probed apart.
            llm_session("b", endpoints.url("good"), ModelName="sales-v1"),
        ]
    )
    result = ws.run_here("probe", str(ws.manifests))
    assert result.code == 0, str(result)
    bodies = {call["body"].get("model"): call["body"] for call in endpoints.received("good")}
    assert set(bodies) == {"support-v2", "sales-v1"}
    first = bodies["support-v2"]
    assert (first["temperature"], first["top_p"], first["max_tokens"]) == (0.5, 0.8, 100)
    assert first["custom"] == '{"tenant": "acme"}'
    assert "Probe: 2 endpoint call(s) for 2 session(s): 2 good, 0 bad." in result.out


def test_an_unresolved_key_stops_the_probe_before_any_call(
    ws: Workspace, endpoints: LlmEndpoints
) -> None:
    ws.declare([llm_session("a", endpoints.url("good"), APIKey="${env:NOT_SET_ANYWHERE}")])
    result = ws.run_here("probe", str(ws.manifests))
    assert result.code == 1
    assert "NOT_SET_ANYWHERE" in result.err
    assert endpoints.received("good") == []


def test_invalid_files_are_reported_as_validate_does(ws: Workspace) -> None:
    broken = session("a")
    broken["spec"]["Config"]["LLMConfig"]["Temperature"] = 7
    ws.declare([broken])
    result = ws.run_here("probe", str(ws.manifests))
    assert result.code == 1
    assert "/Config/LLMConfig/Temperature" in result.err


def test_apply_probe_starts_only_the_sessions_whose_endpoint_is_good(
    ws: Workspace, endpoints: LlmEndpoints
) -> None:
    good = llm_session("alpha", endpoints.url("good"))
    bad = llm_session("beta", endpoints.url("wrong-object"))
    ws.declare([good, bad])

    result = ws.apply("--probe", "--probe-timeout", TIMEOUT)

    assert result.code == 3, str(result)  # partly applied
    tasks = {task["TaskId"] for task in ws.emulator.tasks()}
    assert tasks == {"task-alpha"}
    assert "✗ create beta: not started: its CustomLLM endpoint failed the probe:" in result.err
    assert endpoints.url("wrong-object") in result.err
    assert "1 succeeded, 1 failed" in result.out
    assert [r["name"] for r in ws.records()] == ["alpha"]
    for secret in SECRET_VALUES:
        assert secret not in result.out + result.err


def test_apply_probe_json_reports_the_refused_start(ws: Workspace, endpoints: LlmEndpoints) -> None:
    ws.declare([llm_session("beta", endpoints.url("unauthorized"))])
    result = ws.apply("--probe", "--format", "json")
    assert result.code == 1, str(result)
    document = json.loads(result.out)
    (entry,) = document["results"]
    assert (entry["name"], entry["action"], entry["outcome"]) == ("beta", "create", "failed")
    assert "HTTP 401" in entry["detail"] and KEY not in entry["detail"]
    assert ws.emulator.tasks() == []


def test_apply_without_probe_calls_no_endpoint(ws: Workspace, endpoints: LlmEndpoints) -> None:
    ws.declare([llm_session("beta", endpoints.url("wrong-object"))])
    result = ws.apply()
    assert result.code == 0, str(result)
    assert endpoints.received("wrong-object") == []


# -- the emulator's reference endpoint ----------------------------------------------------------


def test_the_emulators_custom_llm_passes_the_probe_and_checks_the_key() -> None:
    with EmulatorServer(
        access_key_id="AK", secret_access_key="SK", custom_llm=CustomLlm(api_key=KEY)
    ) as server:
        url = server.url + CUSTOM_LLM_PATH
        good = probe_request({"Url": url, "APIKey": KEY, "ModelName": "m"})
        wrong = probe_request({"Url": url, "APIKey": "not-the-key"})
        results = asyncio.run(probe_all([good, wrong], timeout=10))
    assert results[good].ok, results[good].problem
    assert results[good].chunks >= 2 and results[good].done is not None
    assert results[wrong].problem is not None and results[wrong].problem.startswith("HTTP 401")


def test_the_emulators_custom_llm_echoes_or_answers_as_told() -> None:
    llm = CustomLlm(clock=lambda: 1700000000.0)
    request = {"messages": [{"role": "user", "content": "ping"}], "stream": True}
    answer = llm.answer("POST", {}, json.dumps(request).encode())
    assert (answer.status, answer.content_type) == (200, "text/event-stream")
    assert answer.events[-1] == b"data: [DONE]\n\n"
    chunks = [json.loads(event[len(b"data: ") :]) for event in answer.events[:-1]]
    assert {(c["id"], c["created"], c["object"]) for c in chunks} == {
        (chunks[0]["id"], 1700000000, "chat.completion.chunk")
    }
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == "You said: ping"
    fixed = CustomLlm(reply="Fixed answer.").answer("POST", {}, json.dumps(request).encode())
    assert b"Fixed" in b"".join(fixed.events)
    not_streaming = llm.answer("POST", {}, json.dumps({**request, "stream": False}).encode())
    assert not_streaming.status == 400


def test_a_url_given_as_a_secret_is_shown_as_its_reference(ws: Workspace) -> None:
    # The whole URL is a secret here (a token in its query), and nothing listens there.
    secret_url = f"http://127.0.0.1:1/chat?token={KEY}"
    ws.declare([llm_session("a", "${env:SECRET_LLM_URL}")])
    result = ws.run_here("probe", str(ws.manifests), env={**ws.env(), "SECRET_LLM_URL": secret_url})
    assert result.code == 1, str(result)
    assert "✗ a: ${env:SECRET_LLM_URL}: cannot connect" in result.out
    assert KEY not in result.out + result.err


def test_an_aliyun_session_is_reported_not_probed_on_its_own_line(
    ws: Workspace, endpoints: LlmEndpoints
) -> None:
    # Alibaba Cloud agents have no CustomLLM callback contract (its rules name no pointer): the
    # session is listed, not probed, and does not spoil the verdict on the others.
    ws.declare([llm_session("good", endpoints.url("good")), aliyun_session("front-desk")])

    result = ws.run_here("probe", str(ws.manifests), "--timeout", TIMEOUT)

    assert result.code == 0, str(result)
    lines = lines_by_session(result.out)
    assert set(lines) == {"good", "front-desk"}
    assert lines["front-desk"] == "- front-desk: not probed: aliyun: no CustomLLM endpoint"
    assert lines["good"].startswith("✓ good: ok (")
    summary = "Probe: 1 endpoint call(s) for 1 session(s): 1 good, 0 bad; 1 session(s) without"
    assert summary in result.out, result.out
    assert len(endpoints.received("good")) == 1
