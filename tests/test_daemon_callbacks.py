"""Callback verification and parsing, with the reference's worked signature example."""

from __future__ import annotations

import json
from typing import Any

import pytest

from reconciler.daemon.callbacks import (
    MAX_CALLBACK_BYTES,
    CallbackHint,
    CallbackRejected,
    aliyun_token_matches,
    parse_aliyun,
    parse_volcengine,
    volcengine_signature,
)

# The worked example of the Volcengine reference (computed from the documented algorithm).
EVENT_DATA = (
    '{"AppId":"661e****543cf","BusinessId":"","RoomId":"room1","TaskId":"task1",'
    '"UserID":"user1","RoundID":3,"EventTime":1611736812853,"EventType":0,"RunStage":"taskStop"}'
)
ENVELOPE = {
    "EventType": "VoiceChat",
    "EventData": EVENT_DATA,
    "EventTime": "2025-01-01T00:00:00Z",
    "EventId": "evt-123",
    "AppId": "661e****543cf",
    "Version": "2020-12-01",
    "Nonce": "1234",
}
SECRET = "mysecret"
VECTOR = "1d4c04e5df50448393914b453b8679538629f813b5d5c5807690fb3fe4376c81"


def _signed(envelope: dict[str, Any], secret: str = SECRET) -> bytes:
    return json.dumps({**envelope, "Signature": volcengine_signature(envelope, secret)}).encode()


def _rejected(status: int, call: Any) -> str:
    with pytest.raises(CallbackRejected) as caught:
        call()
    assert caught.value.status == status
    return caught.value.reason


def test_the_reference_vector() -> None:
    assert volcengine_signature(ENVELOPE, SECRET) == VECTOR


def test_a_genuine_task_stop_is_a_hint_that_the_task_ended() -> None:
    body = json.dumps({**ENVELOPE, "Signature": VECTOR}).encode()
    hint = parse_volcengine(body, SECRET)
    assert hint == CallbackHint(
        provider="volcengine",
        event="taskStop",
        ids={"AppId": "661e****543cf", "RoomId": "room1", "TaskId": "task1"},
        ended=True,
        identity="661e****543cf/room1/task1",
        event_id="evt-123",
        at="2021-01-27T08:40:12Z",  # EventData's EventTime, 1611736812853 Unix ms
    )


def test_the_signature_is_compared_case_insensitively_and_noce_is_accepted() -> None:
    upper = json.dumps({**ENVELOPE, "Signature": VECTOR.upper()}).encode()
    assert parse_volcengine(upper, SECRET) is not None
    old = {k: v for k, v in ENVELOPE.items() if k != "Nonce"} | {"Noce": "1234"}
    assert volcengine_signature(old, SECRET) == VECTOR
    assert parse_volcengine(json.dumps({**old, "Signature": VECTOR}).encode(), SECRET)


@pytest.mark.parametrize(
    "forged",
    [
        {**ENVELOPE, "Signature": "0" * 64},
        {**ENVELOPE, "Signature": VECTOR, "EventData": EVENT_DATA.replace("task1", "task2")},
        {**ENVELOPE, "Signature": VECTOR, "Nonce": "9999"},
        {**ENVELOPE, "Signature": VECTOR, "EventTime": "2025-01-01T00:00:01Z"},
        {**ENVELOPE, "Signature": ""},
        dict(ENVELOPE),  # no Signature at all
    ],
)
def test_a_forged_or_altered_envelope_is_refused(forged: dict[str, Any]) -> None:
    _rejected(401, lambda: parse_volcengine(json.dumps(forged).encode(), SECRET))


def test_the_wrong_secret_or_none_configured_is_refused() -> None:
    body = _signed(ENVELOPE)
    _rejected(401, lambda: parse_volcengine(body, "another-secret"))
    assert "no Volcengine callback secret" in _rejected(401, lambda: parse_volcengine(body, None))


def test_malformed_bodies_are_bad_requests() -> None:
    _rejected(400, lambda: parse_volcengine(b"not json", SECRET))
    _rejected(400, lambda: parse_volcengine(b"[1, 2]", SECRET))
    _rejected(400, lambda: parse_volcengine(b"\xff\xfe", SECRET))
    not_json_data = {**ENVELOPE, "EventData": "{oops"}
    reason = _rejected(400, lambda: parse_volcengine(_signed(not_json_data), SECRET))
    assert "EventData" in reason
    _rejected(413, lambda: parse_volcengine(b" " * (MAX_CALLBACK_BYTES + 1), SECRET))


def test_other_stages_and_errors_do_not_say_the_task_ended() -> None:
    data = json.loads(EVENT_DATA) | {"RunStage": "answerFinish"}
    hint = parse_volcengine(_signed({**ENVELOPE, "EventData": json.dumps(data)}), SECRET)
    assert hint is not None and not hint.ended and hint.event == "answerFinish"
    failed = json.loads(EVENT_DATA) | {
        "EventType": 1,
        "RunStage": "llm",
        "ErrorInfo": {"Errorcode": 1000001, "Reason": "task init failed"},
    }
    hint = parse_volcengine(_signed({**ENVELOPE, "EventData": json.dumps(failed)}), SECRET)
    assert hint is not None and not hint.ended and hint.detail == "1000001 task init failed"
    # An error event with the taskStop stage is not the documented end-of-task pair.
    odd = json.loads(EVENT_DATA) | {"EventType": 1}
    hint = parse_volcengine(_signed({**ENVELOPE, "EventData": json.dumps(odd)}), SECRET)
    assert hint is not None and not hint.ended


def test_a_verified_event_of_another_kind_is_accepted_and_ignored() -> None:
    other = {**ENVELOPE, "EventType": "RoomCreate", "EventData": '{"RoomId":"r"}'}
    assert parse_volcengine(_signed(other), SECRET) is None


def test_a_task_missing_identity_fields_has_no_identity() -> None:
    data = json.dumps({"AppId": "a", "RoomId": "r", "EventType": 0, "RunStage": "taskStop"})
    hint = parse_volcengine(_signed({**ENVELOPE, "EventData": data}), SECRET)
    assert hint is not None and hint.identity is None and hint.ids["TaskId"] == ""


# -- Alibaba Cloud ----------------------------------------------------------------------------

TOKEN = "cb-token-0123456789"
TAG = {"lineage": "lin-1", "session": "front-desk-07", "attempt": "att-9"}
AGENT_STOP = {
    "aiAgentId": "39f8e0bc005e4f309379701645f4a1b2",
    "instanceId": "inst-42",
    "event": "agent_stop",
    "data": {},
    "code": 0,
    "message": "",
    "timestamp": 1735689600000,
    "userData": json.dumps({"tenant": "acme", "reconciler": TAG}),
}


@pytest.mark.parametrize("header", [TOKEN, f"Bearer {TOKEN}", f"bearer {TOKEN}", f"  {TOKEN} "])
def test_the_token_is_accepted_bare_or_as_bearer(header: str) -> None:
    hint = parse_aliyun(json.dumps(AGENT_STOP).encode(), header, TOKEN)
    assert hint == CallbackHint(
        provider="aliyun",
        event="agent_stop",
        ids={"AIAgentId": AGENT_STOP["aiAgentId"], "InstanceId": "inst-42"},
        ended=True,
        session="front-desk-07",
    )


@pytest.mark.parametrize(
    "header", [None, "", "Bearer", "Bearer wrong", TOKEN + "x", TOKEN[:-1], f"Basic {TOKEN}"]
)
def test_a_missing_or_wrong_token_is_refused(header: str | None) -> None:
    assert not aliyun_token_matches(header, TOKEN)
    _rejected(401, lambda: parse_aliyun(json.dumps(AGENT_STOP).encode(), header, TOKEN))


def test_no_token_configured_refuses_everything() -> None:
    assert not aliyun_token_matches("", "")
    reason = _rejected(401, lambda: parse_aliyun(b"{}", "anything", None))
    assert "no Alibaba Cloud callback token" in reason


def test_aliyun_events_other_than_agent_stop_do_not_say_it_ended() -> None:
    start = AGENT_STOP | {"event": "agent_start"}
    hint = parse_aliyun(json.dumps(start).encode(), TOKEN, TOKEN)
    assert not hint.ended and hint.session == "front-desk-07"
    error = AGENT_STOP | {"event": "error", "code": 4001, "message": "LLM timeout"}
    assert parse_aliyun(json.dumps(error).encode(), TOKEN, TOKEN).detail == "4001 LLM timeout"


@pytest.mark.parametrize(
    "user_data",
    [None, "", "not json", json.dumps({"tenant": "acme"}), json.dumps({"reconciler": "x"}), 7],
)
def test_user_data_without_our_tag_names_no_session(user_data: Any) -> None:
    event = AGENT_STOP | {"userData": user_data}
    assert parse_aliyun(json.dumps(event).encode(), TOKEN, TOKEN).session is None


def test_an_object_user_data_is_read_too() -> None:
    event = AGENT_STOP | {"userData": {"reconciler": TAG}}
    assert parse_aliyun(json.dumps(event).encode(), TOKEN, TOKEN).session == "front-desk-07"


def test_malformed_aliyun_bodies_are_bad_requests_once_authenticated() -> None:
    _rejected(400, lambda: parse_aliyun(b"nope", TOKEN, TOKEN))
    _rejected(400, lambda: parse_aliyun(b'{"aiAgentId": "a"}', TOKEN, TOKEN))
    # Authentication comes first: a bad body without the token is a 401, not a 400.
    _rejected(401, lambda: parse_aliyun(b"nope", "wrong", TOKEN))
