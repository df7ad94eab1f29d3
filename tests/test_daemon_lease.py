"""The leader lease on a real PostgreSQL server: one winner, hand-over when the leader's
backend is killed, and a frozen (SIGSTOPped) leader replaced within the lease that, thawed,
refuses to go on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from reconciler.core.model import SessionRecord
from reconciler.daemon.lease import LeaderLease, with_keepalives
from reconciler.errors import LockLost
from reconciler.state.postgres import PostgresStateStore
from tests.pg_helpers import postgres_url, throwaway_schema

REPO = Path(__file__).resolve().parent.parent
WAIT = 60.0  # a generous bound on what should take about a lease: a hung test, not a timing


@pytest.fixture
def pg() -> Iterator[tuple[str, str]]:
    url = postgres_url()
    with throwaway_schema(url) as schema:
        yield url, schema


@pytest.fixture
def stores(pg: tuple[str, str]) -> Iterator[tuple[PostgresStateStore, PostgresStateStore]]:
    url, schema = pg
    first = PostgresStateStore(with_keepalives(url, 2), schema=schema)
    second = PostgresStateStore(with_keepalives(url, 2), schema=schema)
    try:
        yield first, second
    finally:
        first.close()
        second.close()


def _until(condition: object, what: str) -> float:
    """Poll `condition()` until true; the seconds it took (printed by callers, never asserted)."""
    start = time.monotonic()
    while not condition():  # type: ignore[operator]
        if time.monotonic() - start > WAIT:
            raise AssertionError(f"{what}: not within {WAIT:g} s")
        time.sleep(0.05)
    return time.monotonic() - start


def test_with_keepalives_adds_only_what_is_missing() -> None:
    url = "postgresql://u@h:5432/db?options=-csearch_path%3Dx&keepalives_idle=9"
    added = with_keepalives(url, 15)
    assert added.startswith(url + "&")
    assert "keepalives_idle=9" in added and added.count("keepalives_idle") == 1
    assert "keepalives=1" in added and "tcp_user_timeout=15000" in added
    assert "keepalives_interval=2" in added and "keepalives_count=3" in added
    assert with_keepalives("postgresql://u@h/db", 3).startswith("postgresql://u@h/db?keepalives=1")
    assert with_keepalives("host=h dbname=db", 3).startswith("host=h dbname=db keepalives=1 ")
    full = "host=h keepalives=0 keepalives_idle=1 keepalives_interval=1 keepalives_count=1 "
    assert with_keepalives(full + "tcp_user_timeout=5", 3) == full + "tcp_user_timeout=5"


def test_a_lease_shorter_than_a_second_is_refused(
    stores: tuple[PostgresStateStore, PostgresStateStore],
) -> None:
    with pytest.raises(ValueError, match="shorter than"):
        LeaderLease(stores[0], lease=0.5)


def test_one_of_two_contenders_leads_and_the_session_is_bounded(
    stores: tuple[PostgresStateStore, PostgresStateStore],
) -> None:
    with LeaderLease(stores[0], lease=2) as first, LeaderLease(stores[1], lease=2) as second:
        assert first.try_acquire() and first.leading
        assert not second.try_acquire() and not second.leading
        assert second.holder is not None
        assert second.holder.pid == os.getpid() and second.holder.command == "watch"
        first.verify()
        assert first.session_bounds == {
            "idle_session_timeout": "2000",
            "idle_in_transaction_session_timeout": "2000",
            "tcp_user_timeout": "2000",
            "tcp_keepalives_idle": "1",
        }
        first.release()
        assert not first.leading
        assert second.try_acquire()
        with pytest.raises(LockLost):
            first.verify()  # a released lease is not a lease


def test_a_killed_leader_backend_hands_over_and_the_old_leader_stops(
    pg: tuple[str, str], stores: tuple[PostgresStateStore, PostgresStateStore]
) -> None:
    url, _ = pg
    noticed = threading.Event()
    with (
        LeaderLease(stores[0], lease=2, on_lost=lambda _: noticed.set()) as first,
        LeaderLease(stores[1], lease=2) as second,
    ):
        assert first.try_acquire()
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (first.backend_pid,))
        took = _until(second.try_acquire, "the standby takes over")
        print(f"hand-over after pg_terminate_backend: {took:.2f} s")
        with pytest.raises(LockLost):
            first.verify()
        assert noticed.wait(WAIT)  # the heartbeat noticed too (or verify did first)
        with pytest.raises(LockLost):
            first.verify()  # and it stays lost: no silent reconnect
        # The store writes through the lease's session: a write now fails, it does not
        # reconnect and write beside the new leader.
        record = SessionRecord("s", "volcengine", "a/r/t", "fp", "{}")
        with pytest.raises(LockLost):
            stores[0].put_record(record)
        assert stores[1].get_record("s") is None
        first.release()
        assert not first.try_acquire()  # the new leader holds it now
        second.verify()


def test_an_unconfirmed_lease_is_refused_locally_before_the_server_lets_go(
    stores: tuple[PostgresStateStore, PostgresStateStore],
) -> None:
    now = [1000.0]
    with (
        LeaderLease(stores[0], lease=60, clock=lambda: now[0]) as first,
        LeaderLease(stores[1], lease=60) as second,
    ):
        assert first.try_acquire()
        first.verify()
        now[0] += 60 * 0.8  # a freeze as long as the trusted share of the lease
        with pytest.raises(LockLost, match="not confirmed within 60 s"):
            first.verify()
        # The server still holds the lock for it: the refusal came before any hand-over.
        assert not second.try_acquire()
        first.release()
        assert second.try_acquire()


def test_a_frozen_leader_is_replaced_within_the_lease_and_makes_no_call_when_thawed(
    pg: tuple[str, str], stores: tuple[PostgresStateStore, PostgresStateStore]
) -> None:
    url, schema = pg
    lease = 2.0
    child = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "tests" / "lease_holder.py"),
            with_keepalives(url, lease),
            schema,
            str(lease),
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(child.stdout.readline, "")))  # type: ignore[union-attr]
    reader.start()
    try:
        _until(lambda: any(line.startswith("leading") for line in lines), "the child leads")
        with LeaderLease(stores[1], lease=lease) as standby:
            assert not standby.try_acquire()
            assert standby.holder is not None and standby.holder.pid == child.pid
            os.kill(child.pid, signal.SIGSTOP)
            stopped_at = time.monotonic()
            took = _until(standby.try_acquire, "the standby takes over from the frozen leader")
            print(f"frozen leader replaced after {took:.2f} s (lease {lease:g} s)")
            os.kill(child.pid, signal.SIGCONT)
            assert child.wait(WAIT) == 3, child.stderr.read() if child.stderr else ""
            reader.join(WAIT)
            standby.verify()  # the new leader is undisturbed
        lost = [line for line in lines if line.startswith("lost")]
        assert len(lost) == 1 and "not confirmed within" in lost[0]
        # No verify succeeded after the freeze began: thawed, it went straight to "lost".
        confirmed = [float(line.split()[1]) for line in lines if line.startswith("ok")]
        assert confirmed and max(confirmed) < stopped_at
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGCONT)
            child.kill()
            child.wait()
        reader.join(5)
