"""Issue #11 item 5: a call that never left this machine is not a call of unknown outcome.

Connection refused and DNS failures mean nothing was sent: they are retried, then fail for good
(the intent is finished as failed, nothing is left pending, the next plan is a plain create).
Errors after the request may have been sent (a read timeout, a dropped connection, a 504) still
leave a Start pending. Everything is real: a closed port, an unresolvable name, the emulator.
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import pytest
from apply_helpers import AK, SK, Workspace, running, session

from reconciler.core.model import JournalEntry
from reconciler.emulator.volcengine import Faults
from reconciler.errors import ErrorKind, ProviderError
from reconciler.providers.volcengine.client import VolcengineClient
from reconciler.state.sqlite import SqliteStateStore

# Small and quick: three attempts, a few milliseconds of backoff in all.
QUICK_RETRIES = {"max_attempts": "3", "max_retry_seconds": "0.05"}
UNRESOLVABLE = "http://nonexistent.invalid"


def closed_port_url() -> str:
    """The URL of a port on 127.0.0.1 where nothing listens: bound, then closed."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def start_body() -> dict[str, Any]:
    spec: dict[str, Any] = session("a", llm_key="sk-literal-for-the-client-test")["spec"]
    return spec


def journal(ws: Workspace) -> list[JournalEntry]:
    with SqliteStateStore(ws.state) as store:
        return store.recent_journal(100)


async def start_against(url: str, timeout: float = 5.0) -> ProviderError:
    async with VolcengineClient(url, "cn-north-1", "2024-12-01", AK, SK, timeout=timeout) as client:
        with pytest.raises(ProviderError) as failed:
            await client.start(start_body())
    return failed.value


@pytest.mark.parametrize("where", ["closed port", "unresolvable host"])
def test_the_client_marks_a_connection_failure_as_never_sent(where: str) -> None:
    url = closed_port_url() if where == "closed port" else UNRESOLVABLE
    error = asyncio.run(start_against(url))
    assert error.kind is ErrorKind.RETRYABLE
    assert error.sent is False
    assert "ConnectError" in str(error)


def test_the_client_marks_a_read_timeout_as_maybe_sent(ws: Workspace) -> None:
    ws.emulator.set_faults(Faults(latency=1.0))
    error = asyncio.run(start_against(ws.emulator.url, timeout=0.2))
    assert error.kind is ErrorKind.RETRYABLE
    assert error.sent is True
    assert "ReadTimeout" in str(error)


def test_the_client_marks_a_dropped_connection_and_a_504_as_maybe_sent(ws: Workspace) -> None:
    ws.emulator.set_faults(Faults(lost_response_rate=1.0, seed=1))
    dropped = asyncio.run(start_against(ws.emulator.url))
    assert (dropped.kind, dropped.sent) == (ErrorKind.RETRYABLE, True)
    ws.emulator.set_faults(Faults(late_504_rate=1.0, seed=1))
    late = asyncio.run(start_against(ws.emulator.url))
    assert (late.kind, late.sent, late.status) == (ErrorKind.RETRYABLE, True, 504)


@pytest.mark.parametrize("where", ["closed port", "unresolvable host"])
def test_a_start_that_never_connected_fails_definitively(ws: Workspace, where: str) -> None:
    url = closed_port_url() if where == "closed port" else UNRESOLVABLE
    ws.declare([session("a")])
    env = ws.env(volcengine__endpoint=url, **QUICK_RETRIES)

    failed = ws.run("apply", str(ws.manifests), "--auto-approve", env=env)

    assert failed.code == 1, str(failed)
    assert "✗ create a: start failed: StartVoiceChat: ConnectError:" in failed.err
    assert "unconfirmed" not in failed.err
    assert "Apply: 0 succeeded, 1 failed." in failed.out
    assert ws.pending() == []  # finished as failed: nothing is left for recovery
    assert ws.records() == []
    entries = journal(ws)
    assert [entry.op.value for entry in entries] == ["start"]
    assert entries[0].outcome is not None and entries[0].outcome.startswith("failed: ")
    assert ws.emulator.calls()["total"] == 0

    plan = ws.run("plan", str(ws.manifests))
    assert plan.code == 0, str(plan)
    assert "Plan: 1 to start" in plan.out
    assert "unknown outcome" not in plan.err  # no note about calls of unknown outcome

    # With the endpoint right again, the plain create goes through: no recovery step first.
    done = ws.run("apply", str(ws.manifests), "--auto-approve")
    assert done.code == 0, str(done)
    assert "Finishing the calls" not in done.err
    assert len(running(ws.emulator)) == 1


def test_a_start_that_timed_out_reading_stays_pending(ws: Workspace) -> None:
    """The request went out; only its answer is missing: the outcome is unknown."""
    ws.declare([session("a")])
    ws.emulator.set_faults(Faults(latency=1.0))
    env = ws.env(volcengine__timeout="0.2", max_attempts="1")

    failed = ws.run("apply", str(ws.manifests), "--auto-approve", env=env)

    assert failed.code == 1, str(failed)
    assert "start unconfirmed: StartVoiceChat: ReadTimeout" in failed.err
    assert [entry.name for entry in ws.pending()] == ["a"]


def test_an_announcement_that_never_connected_is_left_for_the_next_apply(
    ws: Workspace,
) -> None:
    """Never sent means never played: it is not recorded as delivered (at most once does not
    turn into never), and the next apply with a working endpoint plays it."""
    ws.declare([session("a")])
    assert ws.run("apply", str(ws.manifests), "--auto-approve").code == 0
    hello = {"id": "hello-1", "message": "Hello everyone"}
    ws.declare([session("a", announcements=[hello])])
    env = ws.env(volcengine__endpoint=closed_port_url(), **QUICK_RETRIES)

    failed = ws.run("apply", str(ws.manifests), "--auto-approve", env=env)

    assert failed.code == 1, str(failed)
    assert "announce hello-1 failed: UpdateVoiceChat: ConnectError:" in failed.err
    assert ws.records()[0]["announcements_delivered"] == []
    before = ws.emulator.calls()["by_action"].get("UpdateVoiceChat", 0)
    done = ws.run("apply", str(ws.manifests), "--auto-approve")
    assert done.code == 0, str(done)
    assert ws.emulator.calls()["by_action"]["UpdateVoiceChat"] == before + 1
    assert ws.records()[0]["announcements_delivered"] == ["hello-1"]


def test_the_journal_keeps_no_secret_of_a_failed_connection(ws: Workspace) -> None:
    ws.declare([session("a")])
    env = ws.env(volcengine__endpoint=closed_port_url(), **QUICK_RETRIES)
    failed = ws.run("apply", str(ws.manifests), "--auto-approve", env=env)
    assert failed.code == 1
    text = json.dumps([entry.outcome for entry in journal(ws)]) + failed.out + failed.err
    assert SK not in text and "sk-live-llm" not in text
