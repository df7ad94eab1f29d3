"""Issue #11 item 4: a holder whose lock was taken away (`state unlock`) stops at once.

The contract per store: the handle lock() yields verifies that the lock is still held, and
raises LockLost once it is not. End to end on PostgreSQL: an apply paused with SIGSTOP while a
call is in flight, unlocked, then resumed, makes no further call and no further journal write,
and exits 1 naming the loss; the call it was waiting for stays pending, and the next apply
finishes it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from apply_helpers import (
    SECRET_VALUES,
    _child_environ,
    assert_cloud_matches,
    cli_env,
    emulator_server,
    run_cli,
    session,
    write_manifest,
)
from pg_helpers import postgres_url, state_url, throwaway_schema

from reconciler.core.model import JournalEntry, JournalOp
from reconciler.emulator.volcengine import Faults
from reconciler.errors import LockLost, StateError
from reconciler.state.postgres import PostgresStateStore
from reconciler.state.sqlite import SqliteStateStore

# A liveness bound for polling, never a timing assertion.
WAIT_SECONDS = 60.0


@pytest.fixture(scope="module")
def server_url() -> str:
    return postgres_url()


@pytest.fixture
def pg_state(server_url: str) -> Iterator[str]:
    """A RECONCILER_STATE URL on a throwaway schema."""
    with throwaway_schema(server_url) as schema:
        yield state_url(server_url, schema)


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.02)


# -- the contract, per store -------------------------------------------------------------


def test_sqlite_handle_verifies_while_held_and_refuses_after_release(tmp_path: Path) -> None:
    with SqliteStateStore(tmp_path / "state.db") as store:
        with store.lock("apply") as held:
            held.verify()
            held.verify()
        with pytest.raises(StateError, match="already released"):
            held.verify()


def test_sqlite_handle_notices_its_lock_file_replaced(tmp_path: Path) -> None:
    """flock cannot be taken from a live holder, but its file can be removed: a new holder
    then locks another inode, and the old one must not go on writing."""
    with SqliteStateStore(tmp_path / "state.db") as store, store.lock("apply") as held:
        store.lock_path.unlink()
        other = SqliteStateStore(tmp_path / "state.db")
        with other, other.lock("apply again"), pytest.raises(LockLost) as lost:
            held.verify()
    assert str(lost.value) == (
        f"the lock file {store.lock_path} was removed or replaced while this process held it,"
        " so another process may hold the lock now: stopping at once; calls already sent stay"
        " pending for the next apply to finish"
    )


def test_postgres_handle_is_lost_once_unlocked_and_stays_lost(pg_state: str) -> None:
    with PostgresStateStore(pg_state) as store, PostgresStateStore(pg_state) as other:
        with store.lock("apply sessions/") as held:
            held.verify()
            displaced = other.force_unlock()
            assert displaced is not None and displaced.holder is not None
            assert displaced.holder.pid == os.getpid()
            with pytest.raises(LockLost) as lost:
                held.verify()
            # A new holder takes the lock; the old handle never trusts it again.
            with other.lock("apply by someone else"), pytest.raises(LockLost):
                held.verify()
        assert str(lost.value) == (
            f"the writer lock on {store.location} was taken away (state unlock?) while this"
            " process held it: stopping at once; calls already sent stay pending for the next"
            " apply to finish"
        )
        with pytest.raises(StateError, match="already released"):
            held.verify()


def test_postgres_writes_under_the_lock_die_with_its_session(pg_state: str) -> None:
    """While a store holds the lock its writes go through the lock's session: even a write
    that skipped verify() cannot land once `state unlock` has ended that session."""
    with PostgresStateStore(pg_state) as store, PostgresStateStore(pg_state) as other:
        with store.lock("apply") as held:
            entry = store.begin_intent("a", JournalOp.START, "volcengine", "x/r/t", "{}")
            assert other.force_unlock() is not None
            with pytest.raises(LockLost):
                store.finish_intent(entry, "started", None)
            with pytest.raises(LockLost):  # and the handle knows it too
                held.verify()
        assert [e.outcome for e in other.pending_intents() if e.id == entry] == [None]
        # Without the lock, the store writes as before, on its own connection.
        store.finish_intent(entry, "finished by hand", None)
        assert other.pending_intents() == []


def test_postgres_handle_verifies_while_held(pg_state: str) -> None:
    with PostgresStateStore(pg_state) as store, store.lock("apply") as held:
        for _ in range(3):
            held.verify()


# -- state unlock from the command line ---------------------------------------------------


def test_unlock_with_nothing_locked_says_so(tmp_path: Path, pg_state: str) -> None:
    with PostgresStateStore(pg_state) as store:
        location = store.location
    env = {"RECONCILER_STATE": pg_state}
    done = run_cli(["state", "unlock"], env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"Nothing to unlock: the state at {location} is not locked.\n"


def test_unlock_of_a_sqlite_state(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    env = {"RECONCILER_STATE": str(state)}
    SqliteStateStore(state).close()
    free = run_cli(["state", "unlock"], env, tmp_path)
    assert free.returncode == 0, free.stderr
    assert free.stdout == f"Nothing to unlock: the state at {state} is not locked.\n"
    with SqliteStateStore(state) as store, store.lock("apply here"):
        held = run_cli(["state", "unlock"], env, tmp_path)
    assert held.returncode == 1
    assert "it is held now by pid" in held.stderr and "(apply here)" in held.stderr
    assert "stop that process to release it" in held.stderr
    assert "Traceback" not in held.stderr


# -- end to end: SIGSTOP, unlock, SIGCONT ---------------------------------------------------


def journal(url: str) -> list[JournalEntry]:
    with PostgresStateStore(url) as store:
        return store.recent_journal(1000)


def spawn_apply(manifests: Path, env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "reconciler", "apply", str(manifests), "--auto-approve"],
        env=_child_environ(env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("parallelism", [1, 4])
def test_an_unlocked_apply_stops_at_once_when_it_resumes(
    tmp_path: Path, pg_state: str, parallelism: int
) -> None:
    sessions = [session(f"s{i}") for i in range(3 * parallelism + 1)]
    manifests = tmp_path / "desired"
    write_manifest(manifests / "sessions.json", sessions)
    # Each call is answered after a while: the apply is nearly always waiting on its calls.
    with emulator_server(Faults(latency=1.5)) as emulator:
        env = {**cli_env(emulator.url, tmp_path / "unused.db"), "RECONCILER_STATE": pg_state}
        env["RECONCILER_PARALLELISM"] = str(parallelism)
        first = spawn_apply(manifests, env, tmp_path)
        try:
            paused_with_a_call_in_flight(first, pg_state)
            unlocked = run_cli(["state", "unlock"], env, tmp_path)
            before_resume = journal(pg_state)
            calls_at_unlock = emulator.calls()["total"]
            os.kill(first.pid, signal.SIGCONT)
            out, err = first.communicate(timeout=WAIT_SECONDS)
        finally:
            if first.poll() is None:
                first.kill()
                first.communicate()

        assert unlocked.returncode == 0, unlocked.stderr
        assert unlocked.stdout.startswith(
            f"Unlocked: terminated the backend of pid {first.pid} on {socket.gethostname()}"
            f" (apply {manifests}), holding since "
        ), unlocked.stdout
        assert unlocked.stdout.endswith("; that process stops at its next call.\n")

        assert first.returncode == 1, f"{out}\n{err}"
        with PostgresStateStore(pg_state) as store:
            location = store.location
        assert (
            f"error: the writer lock on {location} was taken away (state unlock?) while this"
            " process held it: stopping at once" in err
        ), err
        # One message, however many calls were in flight: no traceback, no asyncio noise.
        assert "Traceback" not in err and "exception" not in err.lower(), err
        assert err.count("was taken away") == 1, err
        # No further journal write: not even the outcome of a call answered after the loss.
        assert journal(pg_state) == before_resume
        pending = [entry for entry in before_resume if entry.outcome is None]
        assert 1 <= len(pending) <= parallelism
        # No further call: only the sessions journaled before the pause were ever called (the
        # one in flight may have been counted after the unlock), the others never.
        calls = emulator.calls()["total"]
        assert calls_at_unlock <= calls <= len(before_resume) < len(sessions)
        for secret in SECRET_VALUES:
            assert secret not in out + err + unlocked.stdout

        # The next apply finishes the call that was left pending, then the rest.
        second = run_cli(["apply", str(manifests), "--auto-approve"], env, tmp_path)
        assert second.returncode == 0, second.stderr
        assert "Finishing the calls an earlier run left unconfirmed" in second.stderr
        assert_cloud_matches(emulator, sessions)
        assert [e for e in journal(pg_state) if e.outcome is None] == []


def paused_with_a_call_in_flight(apply: subprocess.Popen[str], url: str) -> None:
    """SIGSTOP `apply` once it has journaled an intent whose call is on its way (the emulator
    holds each call for its latency, so that is where the apply waits)."""

    def has_pending() -> bool:
        if apply.poll() is not None:
            pytest.fail(f"the apply ended early: {apply.communicate()}")
        try:
            return any(entry.outcome is None for entry in journal(url))
        except StateError:  # not created yet: the apply is still starting
            return False

    wait_for(has_pending, "the apply to begin a call")
    os.kill(apply.pid, signal.SIGSTOP)


def test_a_dead_lock_connection_is_taken_for_a_lost_lock(server_url: str, pg_state: str) -> None:
    """Whatever ends the lock's session (state unlock, a DBA, a restart), the holder stops."""
    command = f"apply {uuid.uuid4().hex}"  # names only this test's lock connection
    with PostgresStateStore(pg_state) as store, store.lock(command) as held:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = %s",
                (f"reconciler: {command}",),
            )
        with pytest.raises(LockLost):
            held.verify()
