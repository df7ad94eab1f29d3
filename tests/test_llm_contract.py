"""The CustomLLM contract judge (pure): fed whole, byte by byte, and with every line ending."""

from __future__ import annotations

import json
from typing import Any

import pytest

from reconciler.core.llm_contract import StreamJudge, excerpt, head_problem
from reconciler.core.llm_probe import probe_request


def chunk(content: str = "hi", **override: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}],
    }
    base.update(override)
    return base


def stream(*chunks: dict[str, Any] | str, done: bool = True, newline: str = "\n") -> bytes:
    lines = []
    for item in chunks:
        payload = item if isinstance(item, str) else json.dumps(item)
        lines.append(f"data: {payload}{newline}{newline}")
    if done:
        lines.append(f"data: [DONE]{newline}{newline}")
    return "".join(lines).encode()


def judge(data: bytes, *, step: int | None = None, close: bool = True) -> StreamJudge:
    verdict = StreamJudge()
    pieces = [data] if step is None else [data[i : i + step] for i in range(0, len(data), step)]
    for piece in pieces:
        verdict.feed(piece)
        if verdict.finished:
            return verdict
    if close:
        verdict.finish()
    return verdict


GOOD = stream(chunk("Hel"), chunk("lo"), chunk("", choices=[]))


@pytest.mark.parametrize("step", [None, 1, 3, 7])
@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_a_good_stream_is_good_however_it_is_cut(step: int | None, newline: str) -> None:
    data = stream(chunk("Hel"), chunk("lo"), newline=newline)
    verdict = judge(data, step=step)
    assert verdict.problem is None
    assert verdict.done and verdict.chunks == 2


def test_done_is_seen_without_the_blank_line_and_without_waiting_for_the_close() -> None:
    verdict = judge(stream(chunk(), done=False) + b"data: [DONE]", close=False)
    assert verdict.problem is None
    verdict = judge(stream(chunk(), done=False) + b"data: [DONE]\n", close=False)
    assert verdict.done


def test_comments_are_keep_alives_and_skipped() -> None:
    data = b": ping\n\n" + stream(chunk()) + b": bye\n"
    assert judge(data).problem is None


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (stream(chunk(), done=False), "ended after 1 chunk(s) without data: [DONE]"),
        (b"", "without any data: line"),
        (b"data: [DONE]\n\n", "came before any chunk"),
        (stream("{not json"), "chunk 1 (line 1) is not JSON"),
        (stream("[1, 2]"), "chunk 1 (line 1) is not a JSON object"),
        (stream(chunk(object="chat.completion")), "`object` is 'chat.completion', not \"chat"),
        (stream({k: v for k, v in chunk().items() if k != "object"}), "`object` is missing"),
        (stream(chunk(id="")), "`id` is missing"),
        (stream(chunk(created="now")), "`created` is missing or not an integer"),
        (stream(chunk(choices={"0": {}})), "`choices` is missing or not an array"),
        (stream(chunk(choices=[{"text": "x"}])), "`choices[0].delta` is missing"),
        (
            stream(chunk(choices=[{"delta": {"content": 5}}])),
            "`choices[0].delta.content` is not a string",
        ),
        (stream(chunk(), chunk(id="chatcmpl-2")), "chunk 2 (line 3): `id` is 'chatcmpl-2'"),
        (stream(chunk(), chunk(created=1700000001)), "chunk 2 (line 3): `created` is 1700000001"),
        (b"event: message\n" + stream(chunk()), "'event: message' is not a data: line"),
        (
            f"data: {json.dumps(chunk())}\ndata: {json.dumps(chunk())}\n\n".encode(),
            "a second data: line in one event",
        ),
        (b"data: \xff\xfe\n\n", "not UTF-8"),
    ],
)
def test_each_breach_is_named(data: bytes, expected: str) -> None:
    verdict = judge(data)
    assert verdict.problem is not None
    assert expected in verdict.problem
    assert not verdict.done


def test_the_first_problem_stops_the_judging() -> None:
    verdict = judge(stream(chunk(object="x"), chunk(id="other")), step=1)
    assert verdict.problem is not None and "`object`" in verdict.problem
    assert verdict.chunks == 1


def test_an_endless_stream_is_cut_off() -> None:
    verdict = StreamJudge()
    filler = stream(chunk("x" * 1000), done=False)
    while not verdict.finished:
        verdict.feed(filler)
    assert verdict.problem is not None and "KiB without data: [DONE]" in verdict.problem


@pytest.mark.parametrize(
    ("status", "content_type", "expected"),
    [
        (200, "text/event-stream", None),
        (200, "Text/Event-Stream; charset=utf-8", None),
        (401, "application/json", "HTTP 401"),
        (200, "application/json", "Content-Type is 'application/json', not text/event-stream"),
        (200, None, "no Content-Type header; it must be text/event-stream"),
    ],
)
def test_the_head(status: int, content_type: str | None, expected: str | None) -> None:
    assert head_problem(status, content_type) == expected


def test_excerpts_are_one_short_line_with_secrets_masked() -> None:
    body = b'{"error": "bad key sk-live-123",\n "echo": "Bearer sk-live-123"}' + b"x" * 500
    text = excerpt(body, ["sk-live-123", ""])
    assert "sk-live-123" not in text
    assert "\n" not in text
    assert text.startswith('{"error": "bad key ***", "echo": "Bearer ***"}')
    assert len(text) <= 201
    assert excerpt(b"", []) == "(empty body)"


def test_the_request_is_the_platforms() -> None:
    request = probe_request(
        {
            "Mode": "CustomLLM",
            "Url": "https://llm.example.com/v1/chat",
            "APIKey": "sk-1",
            "ModelName": "support",
            "Temperature": 0.2,
            "TopP": 0.7,
            "MaxTokens": 64,
            "Custom": '{"tenant": "acme"}',
            "SystemMessages": ["not sent: the probe has its own turns"],
        }
    )
    assert request.headers()["Authorization"] == "Bearer sk-1"
    body = json.loads(request.body)
    assert body["stream"] is True
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert (body["model"], body["temperature"], body["top_p"], body["max_tokens"]) == (
        "support",
        0.2,
        0.7,
        64,
    )
    assert body["custom"] == '{"tenant": "acme"}'
    bare = probe_request({"Mode": "CustomLLM", "Url": "http://x"})
    assert "Authorization" not in bare.headers()
    assert json.loads(bare.body)["temperature"] == 0.5  # the platform's default
