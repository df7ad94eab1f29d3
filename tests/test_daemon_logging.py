"""No secret reaches the log output, whichever way it tries: by key, by value, inside a
message, in a traceback, through a library's standard logging, or learnt after startup."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from reconciler.daemon.logging import (
    MASK,
    LoggingSetup,
    Redactor,
    configure_logging,
    sensitive_key,
)

ACCESS_SECRET = "volc-secret-access-key-9f8e7d"
CALLBACK_TOKEN = "cb-token-0123456789"
LATER = "sk-live-llm-resolved-later-42"
SHORT = "pw1"


@pytest.fixture(params=["json", "console"])
def logs(request: pytest.FixtureRequest) -> Iterator[tuple[LoggingSetup, io.StringIO]]:
    stream = io.StringIO()
    setup = configure_logging(
        request.param, secrets=[ACCESS_SECRET, CALLBACK_TOKEN, SHORT], stream=stream
    )
    try:
        yield setup, stream
    finally:
        setup.close()


def _emit_everything(setup: LoggingSetup) -> None:
    log = structlog.get_logger("reconciler.test")
    log.info("by key", token="anything-at-all", api_key="k", AccessKeySecret="s", keyword="ok")
    log.info("by value", innocent=ACCESS_SECRET, short=SHORT)
    log.warning(f"inside a message: refused with {CALLBACK_TOKEN} in the header")
    log.info(
        "nested",
        request={"headers": {"Authorization": f"Bearer {CALLBACK_TOKEN}"}},
        values=[1, ACCESS_SECRET, {"deep": f"x{ACCESS_SECRET}y"}],
    )
    try:
        raise RuntimeError(f"the cloud said: bad signature for {ACCESS_SECRET}")
    except RuntimeError:
        log.exception("a call failed", session="lobby")
    logging.getLogger("httpx").warning("HTTP Request: POST https://x/?token=%s", CALLBACK_TOKEN)
    setup.redactor.add([LATER])
    log.info("resolved later", message=f"using {LATER}")


def test_no_secret_reaches_the_output(logs: tuple[LoggingSetup, io.StringIO]) -> None:
    setup, stream = logs
    _emit_everything(setup)
    output = stream.getvalue()
    for secret in (ACCESS_SECRET, CALLBACK_TOKEN, LATER, "anything-at-all"):
        assert secret not in output
    assert "keyword" in output and "ok" in output  # not every key with "key" in it
    assert output.count(MASK) >= 10
    assert "a call failed" in output and "RuntimeError" in output  # the traceback is kept
    assert "HTTP Request: POST" in output  # the library's record went through the same sink


def test_json_lines_carry_the_event_fields() -> None:
    stream = io.StringIO()
    setup = configure_logging("json", stream=stream)
    try:
        structlog.get_logger("reconciler.engine").info(
            "action",
            session="lobby",
            provider="volcengine",
            action="create",
            outcome="ok",
            attempt=1,
            duration=0.12,
        )
    finally:
        setup.close()
    line = json.loads(stream.getvalue().splitlines()[-1])
    assert line["event"] == "action" and line["session"] == "lobby"
    assert line["attempt"] == 1 and line["duration"] == 0.12
    assert line["level"] == "info" and line["logger"] == "reconciler.engine"
    assert line["timestamp"].endswith("Z")


def test_every_json_line_parses_even_with_a_traceback() -> None:
    stream = io.StringIO()
    setup = configure_logging("json", secrets=[ACCESS_SECRET], stream=stream)
    try:
        _emit_everything(setup)
    finally:
        setup.close()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    failed = next(line for line in lines if line["event"] == "a call failed")
    assert "RuntimeError" in failed["exception"] and MASK in failed["exception"]


def test_levels_below_the_configured_one_are_dropped() -> None:
    stream = io.StringIO()
    setup = configure_logging("json", stream=stream, level=logging.WARNING)
    try:
        structlog.get_logger("x").info("quiet")
        structlog.get_logger("x").warning("loud")
    finally:
        setup.close()
    assert "quiet" not in stream.getvalue() and "loud" in stream.getvalue()


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="console or json"):
        configure_logging("xml")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("key", "sensitive"),
    [
        ("token", True),
        ("api_key", True),
        ("AccessKeySecret", True),
        ("authorization", True),
        ("X-Api-Key", True),
        ("SECRET_ACCESS_KEY", True),
        ("keyword", False),
        ("session", False),
        ("monkey", False),
        ("identity", False),
        ("event", False),
    ],
)
def test_sensitive_keys(key: str, sensitive: bool) -> None:
    assert sensitive_key(key) is sensitive


def test_a_short_secret_is_masked_only_where_it_is_the_whole_value() -> None:
    redactor = Redactor([SHORT, "longer-secret-value"])
    assert redactor.scrub(SHORT) == MASK
    assert redactor.scrub("upw1 stays") == "upw1 stays"
    assert redactor.scrub("a longer-secret-value b") == f"a {MASK} b"
    # A secret that contains another is masked whole, not in pieces.
    nested = Redactor(["abcdef", "xxabcdefxx"])
    assert nested.scrub("[xxabcdefxx]") == f"[{MASK}]"
