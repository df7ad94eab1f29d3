"""The PostgreSQL state store: the shared contract, plus what only a server has (schemas,
several checkouts on one database, concurrent migrations, an advisory lock that dies with its
connection and can be forced open, passwords kept out of messages).

Runs against TEST_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/test);
every test works in a fresh schema that is dropped afterwards. The tests are skipped only when no
server answers there.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from pg_helpers import postgres_url
from psycopg import sql
from psycopg.conninfo import make_conninfo
from state_contract import CONTRACT, StoreFactory, assert_utc_timestamp, full_record

from reconciler.core.model import JournalOp
from reconciler.errors import LockHeld, StateError
from reconciler.state import sqlite
from reconciler.state.base import RecordChange
from reconciler.state.open import open_state
from reconciler.state.postgres import (
    JOURNAL_RETENTION,
    SCHEMA_VERSION,
    PostgresStateStore,
    schema_from_url,
)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
SECRET = "hunter2-Zq9-secret"
# How long a released lock may take to show as free after its holder's connection dies: the
# server notices the closed socket and ends the backend on its own schedule.
RELEASE_WAIT_SECONDS = 10.0


@pytest.fixture(scope="session")
def server_url() -> str:
    return postgres_url()


@pytest.fixture
def schema(server_url: str) -> Iterator[str]:
    name = f"reconciler_test_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def open_store(server_url: str, schema: str) -> Callable[..., PostgresStateStore]:
    def factory(journal_retention: int = JOURNAL_RETENTION) -> PostgresStateStore:
        return PostgresStateStore(server_url, schema=schema, journal_retention=journal_retention)

    return factory


@pytest.fixture
def store(open_store: Callable[..., PostgresStateStore]) -> Iterator[PostgresStateStore]:
    with open_store() as opened:
        yield opened


@pytest.fixture
def raw(server_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with psycopg.connect(server_url, autocommit=True) as conn:
        yield conn


@pytest.mark.parametrize("check", CONTRACT, ids=lambda check: check.__name__)
def test_contract(
    check: Callable[[StoreFactory], None], open_store: Callable[..., PostgresStateStore]
) -> None:
    check(open_store)


def with_query(url: str, query: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{query}"


# -- schemas and migrations ------------------------------------------------------------------


def test_tables_and_version_live_in_the_schema(
    store: PostgresStateStore, schema: str, raw: psycopg.Connection[tuple[object, ...]]
) -> None:
    tables = {
        str(row[0])
        for row in raw.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,)
        ).fetchall()
    }
    expected = {"schema_version", "meta", "sessions", "journal", "lock_holder", "settled_files"}
    assert tables == expected
    version = raw.execute(
        sql.SQL("SELECT version FROM {}").format(sql.Identifier(schema, "schema_version"))
    ).fetchall()
    assert version == [(SCHEMA_VERSION,)]
    assert store.schema == schema
    assert store.location.endswith(f"(schema {schema})")


def test_schema_defaults_to_the_urls_search_path(server_url: str, schema: str) -> None:
    store = open_state(with_query(server_url, f"options=-csearch_path%3D{schema},public"))
    try:
        assert isinstance(store, PostgresStateStore)
        assert store.schema == schema
        store.put_record(full_record("a"))
    finally:
        store.close()
    with PostgresStateStore(server_url, schema=schema) as explicit:
        assert [record.name for record in explicit.list_records()] == ["a"]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://db/x", "public"),
        ("postgres://db/x?options=-c%20search_path%3DOps", "ops"),
        (
            "postgresql://db/x?options=-c%20search_path%3D%22%24user%22,%5C%20%22My%5C%20S%22",
            "My S",
        ),
        ("postgresql://db/x?options=--search-path%3Dstate%20-c%20work_mem%3D4MB", "state"),
        ("host=db options='-c statement_timeout=5s'", "public"),
    ],
)
def test_schema_from_url(url: str, expected: str) -> None:
    assert schema_from_url(url) == expected


def test_two_checkouts_see_one_truth(open_store: Callable[..., PostgresStateStore]) -> None:
    with open_store() as first, open_store() as second:
        assert first.meta() == second.meta()
        first.put_record(full_record("a"))
        assert second.get_record("a") == full_record("a")
        entry = second.begin_intent("b", JournalOp.START, "volcengine", "x", "{}")
        assert [pending.id for pending in first.pending_intents()] == [entry]
        first.finish_intent(entry, "started", RecordChange(put=full_record("b")))
        assert [record.name for record in second.list_records()] == ["a", "b"]
        assert second.pending_intents() == []
        with pytest.raises(StateError, match="already finished"):
            second.finish_intent(entry, "again", None)
        assert first.meta() == second.meta()
        assert second.meta().serial == 2


def test_serial_bumps_from_two_checkouts_add_up(
    open_store: Callable[..., PostgresStateStore],
) -> None:
    errors: list[BaseException] = []

    def work(store: PostgresStateStore, prefix: str) -> None:
        try:
            for index in range(25):
                store.put_record(full_record(f"{prefix}{index}"))
        except BaseException as exc:  # surfaced below: a thread's exception is otherwise lost
            errors.append(exc)

    with open_store() as first, open_store() as second:
        threads = [
            threading.Thread(target=work, args=(first, "a")),
            threading.Thread(target=work, args=(second, "b")),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert first.meta().serial == 50
        assert len(second.list_records()) == 50


def test_a_version_2_state_is_migrated_keeping_its_records(
    open_store: Callable[..., PostgresStateStore],
    schema: str,
    raw: psycopg.Connection[tuple[object, ...]],
) -> None:
    """Version 3 adds the Start's attempt and the last observation; older records have none.
    Version 4 adds the settled files, empty after the migration."""
    with open_store() as store:
        store.put_record(full_record("old", attempt=None, observation=None))
    raw.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(schema, "settled_files")))
    sessions = sql.Identifier(schema, "sessions")
    raw.execute(sql.SQL("ALTER TABLE {} DROP COLUMN observation").format(sessions))
    raw.execute(sql.SQL("ALTER TABLE {} DROP COLUMN attempt").format(sessions))
    raw.execute(
        sql.SQL("UPDATE {} SET version = 2").format(sql.Identifier(schema, "schema_version"))
    )
    with open_store() as store:
        assert store.get_record("old") == full_record("old", attempt=None, observation=None)
        store.put_record(full_record("new"))
        assert store.get_record("new") == full_record("new")
        assert store.settled_files() == []
    version = raw.execute(
        sql.SQL("SELECT version FROM {}").format(sql.Identifier(schema, "schema_version"))
    ).fetchall()
    assert version == [(SCHEMA_VERSION,)] and SCHEMA_VERSION == 4


def test_newer_schema_is_refused(
    open_store: Callable[..., PostgresStateStore],
    schema: str,
    raw: psycopg.Connection[tuple[object, ...]],
) -> None:
    with open_store() as store:
        location = store.location
    raw.execute(
        sql.SQL("UPDATE {} SET version = %s").format(sql.Identifier(schema, "schema_version")),
        (SCHEMA_VERSION + 1,),
    )
    with pytest.raises(StateError) as refused:
        open_store()
    assert str(refused.value) == (
        f"state at {location} has schema version {SCHEMA_VERSION + 1}; this reconciler knows up"
        f" to {SCHEMA_VERSION}: upgrade reconciler"
    )


def test_foreign_schema_is_refused_and_left_alone(
    server_url: str, schema: str, raw: psycopg.Connection[tuple[object, ...]]
) -> None:
    raw.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    raw.execute(sql.SQL("CREATE TABLE {} (x int)").format(sql.Identifier(schema, "sessions")))
    with pytest.raises(StateError, match="not a reconciler state: it has sessions"):
        PostgresStateStore(server_url, schema=schema)
    tables = raw.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,)
    ).fetchall()
    assert tables == [("sessions",)]


_MIGRATE = """
import sys
from reconciler.state.postgres import PostgresStateStore
print("ready", flush=True)
sys.stdin.readline()
with PostgresStateStore(sys.argv[1], schema=sys.argv[2]) as store:
    print(store.meta().lineage, flush=True)
"""


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), *sys.path])}


def test_concurrent_migration_from_several_processes(
    server_url: str, schema: str, raw: psycopg.Connection[tuple[object, ...]]
) -> None:
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _MIGRATE, server_url, schema],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env(),
        )
        for _ in range(6)
    ]
    try:
        for child in children:  # every child imported and waiting: then all start at once
            assert child.stdout is not None
            assert child.stdout.readline() == "ready\n"
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        results = [child.communicate(timeout=120) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    assert [child.returncode for child in children] == [0] * len(children), results
    lineages = {out.strip() for out, _ in results}
    assert len(lineages) == 1
    versions = raw.execute(
        sql.SQL("SELECT version FROM {}").format(sql.Identifier(schema, "schema_version"))
    ).fetchall()
    assert versions == [(SCHEMA_VERSION,)]


# -- records and journal ---------------------------------------------------------------------


def test_finished_entries_are_pruned_pending_ones_kept(
    open_store: Callable[..., PostgresStateStore],
) -> None:
    assert JOURNAL_RETENTION == sqlite.JOURNAL_RETENTION == 10_000
    with open_store(journal_retention=3) as store:
        pending = store.begin_intent("p", JournalOp.START, "volcengine", "x", "{}")
        finished = []
        for index in range(5):
            entry = store.begin_intent(f"s{index}", JournalOp.STOP, "volcengine", "x", "{}")
            store.finish_intent(entry, "stopped", None)
            finished.append(entry)
        kept = [entry.id for entry in store.recent_journal(100)]
        assert kept == [finished[4], finished[3], finished[2], pending]
        assert [entry.id for entry in store.pending_intents()] == [pending]
        # Ids are never reused after pruning, so a saved id cannot name another intent.
        assert store.begin_intent("n", JournalOp.START, "volcengine", "x", "{}") > finished[4]


def test_journal_times_come_from_the_clock(server_url: str, schema: str) -> None:
    moments = iter(
        [
            datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC),  # meta created_at
            datetime(2025, 3, 1, 12, 0, 1, 500000, tzinfo=UTC),
            datetime(2025, 3, 1, 12, 0, 2, tzinfo=UTC),
        ]
    )
    with PostgresStateStore(server_url, schema=schema, clock=lambda: next(moments)) as store:
        entry = store.begin_intent("a", JournalOp.START, "volcengine", "x", "{}")
        store.finish_intent(entry, "ok", None)
        (logged,) = store.recent_journal(1)
    assert logged.started_at == "2025-03-01T12:00:01.500Z"
    assert logged.finished_at == "2025-03-01T12:00:02.000Z"


def test_threads_share_one_store(store: PostgresStateStore) -> None:
    ids: list[int] = []
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for index in range(20):
                name = f"w{worker}-{index}"
                entry = store.begin_intent(name, JournalOp.START, "volcengine", name, "{}")
                store.finish_intent(entry, "ok", RecordChange(put=full_record(name)))
                ids.append(entry)
        except BaseException as exc:  # surfaced below: a thread's exception is otherwise lost
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(set(ids)) == 80
    assert len(store.list_records()) == 80
    assert store.meta().serial == 80


def test_corrupt_record_is_a_state_error(
    store: PostgresStateStore, schema: str, raw: psycopg.Connection[tuple[object, ...]]
) -> None:
    store.put_record(full_record("a"))
    raw.execute(
        sql.SQL("UPDATE {} SET labels = '[1, 2]'").format(sql.Identifier(schema, "sessions"))
    )
    with pytest.raises(StateError, match="record 'a' is corrupt"):
        store.list_records()


def test_closed_store_refuses_use(open_store: Callable[..., PostgresStateStore]) -> None:
    store = open_store()
    store.close()
    store.close()
    with pytest.raises(StateError, match="closed"):
        store.meta()
    with pytest.raises(StateError, match="closed"), store.lock("apply"):
        pass  # pragma: no cover - refused


def test_reconnects_after_the_connection_is_lost(
    server_url: str, schema: str, raw: psycopg.Connection[tuple[object, ...]]
) -> None:
    name = f"reconciler-test-{uuid.uuid4().hex[:8]}"
    with PostgresStateStore(with_query(server_url, f"application_name={name}"), schema=schema) as (
        store
    ):
        lineage = store.meta().lineage
        killed = raw.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (name,),
        ).fetchall()
        assert killed == [(True,)]
        with contextlib.suppress(StateError):  # the call that meets the dead connection
            store.meta()
        assert store.meta().lineage == lineage


# -- the writer lock -------------------------------------------------------------------------

_HOLD_LOCK = """
import sys, time
from reconciler.state.postgres import PostgresStateStore
store = PostgresStateStore(sys.argv[1], schema=sys.argv[2])
with store.lock(sys.argv[3]):
    print("locked", flush=True)
    time.sleep(600)
"""


@contextlib.contextmanager
def lock_held_by_child(
    server_url: str, schema: str, command: str
) -> Iterator[subprocess.Popen[str]]:
    child = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, server_url, schema, command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    try:
        assert child.stdout is not None
        if child.stdout.readline() != "locked\n":
            child.kill()
            pytest.fail(f"lock holder did not start: {child.communicate()[1]}")
        yield child
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.communicate()


def wait_until_unlocked(store: PostgresStateStore) -> None:
    """Poll until the lock is free; a liveness bound, not a timing assertion."""
    deadline = time.monotonic() + RELEASE_WAIT_SECONDS
    while store.lock_holder() is not None:
        if time.monotonic() > deadline:
            pytest.fail(f"the lock was not released within {RELEASE_WAIT_SECONDS} s")
        time.sleep(0.05)


def test_lock_held_by_another_process_dies_with_it(
    open_store: Callable[..., PostgresStateStore], server_url: str, schema: str
) -> None:
    open_store().close()  # migrate first, so the child only takes the lock
    with (
        lock_held_by_child(server_url, schema, "apply lobby/") as child,
        open_store() as store,
    ):
        holder = store.lock_holder()
        assert holder is not None
        assert (holder.pid, holder.host, holder.command) == (
            child.pid,
            socket.gethostname(),
            "apply lobby/",
        )
        assert_utc_timestamp(holder.since)
        with pytest.raises(LockHeld) as refused, store.lock("plan"):
            pass  # pragma: no cover - the lock is held
        assert refused.value.holder == holder
        message = str(refused.value)
        for part in (f"pid {child.pid}", socket.gethostname(), "apply lobby/", holder.since):
            assert part in message

        child.send_signal(signal.SIGKILL)  # no cleanup runs: the server must free the lock
        child.wait()
        wait_until_unlocked(store)
        with store.lock("apply"):
            mine = store.lock_holder()
        assert mine is not None and mine.pid == os.getpid()
        assert store.lock_holder() is None


def test_lock_connection_is_named_after_the_command(
    store: PostgresStateStore, raw: psycopg.Connection[tuple[object, ...]]
) -> None:
    unsigned = store.lock_key & 0xFFFF_FFFF_FFFF_FFFF
    with store.lock("apply lobby"):
        names = raw.execute(
            "SELECT a.application_name FROM pg_locks AS l JOIN pg_stat_activity AS a"
            " ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted"
            " AND l.classid = %s::oid AND l.objid = %s::oid AND l.objsubid = 1",
            (unsigned >> 32, unsigned & 0xFFFF_FFFF),
        ).fetchall()
    assert names == [("reconciler: apply lobby",)]


def test_lock_keys_differ_between_schemas(server_url: str) -> None:
    first, second = schema_pair = (f"k_{uuid.uuid4().hex[:8]}", f"k_{uuid.uuid4().hex[:8]}")
    stores = [PostgresStateStore(server_url, schema=name) for name in schema_pair]
    try:
        assert stores[0].lock_key != stores[1].lock_key
        with stores[0].lock("apply"), stores[1].lock("apply"):
            assert stores[0].lock_holder() is not None
        again = PostgresStateStore(server_url, schema=first)
        assert again.lock_key == stores[0].lock_key  # fixed: the same schema, the same key
        again.close()
    finally:
        for opened in stores:
            opened.close()
        with psycopg.connect(server_url, autocommit=True) as conn:
            for name in (first, second):
                conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


def test_second_lock_in_the_same_store_is_refused(store: PostgresStateStore) -> None:
    with store.lock("apply"):
        with pytest.raises(LockHeld) as refused, store.lock("apply again"):
            pass  # pragma: no cover - the lock is held
        holder = refused.value.holder
        assert holder is not None and holder.command == "apply"


def test_unregistered_holder_is_reported_from_pg_stat_activity(
    store: PostgresStateStore, server_url: str
) -> None:
    with psycopg.connect(server_url, autocommit=True, application_name="reconciler: by hand") as (
        intruder
    ):
        intruder.execute("SELECT pg_try_advisory_lock(%s)", (store.lock_key,))
        holder = store.lock_holder()
        assert holder is not None
        assert (holder.pid, holder.command) == (intruder.info.backend_pid, "by hand")
        assert_utc_timestamp(holder.since)
        with pytest.raises(LockHeld) as refused, store.lock("apply"):
            pass  # pragma: no cover - the lock is held
        assert refused.value.holder == holder
    wait_until_unlocked(store)


def test_close_releases_a_held_lock(open_store: Callable[..., PostgresStateStore]) -> None:
    with open_store() as other:
        store = open_store()
        held = store.lock("apply")
        held.__enter__()
        assert other.lock_holder() is not None
        store.close()
        wait_until_unlocked(other)
        held.__exit__(None, None, None)  # releasing on a closed connection is harmless
        with other.lock("apply"):
            pass


def test_force_unlock_frees_a_live_holder(
    open_store: Callable[..., PostgresStateStore], server_url: str, schema: str
) -> None:
    open_store().close()
    with lock_held_by_child(server_url, schema, "apply hung") as child, open_store() as store:
        assert store.lock_holder() is not None
        store.force_unlock()
        assert child.poll() is None  # the process lives on; only its session was ended
        assert store.lock_holder() is None
        with store.lock("apply"):
            mine = store.lock_holder()
        assert mine is not None and mine.pid == os.getpid()


def test_force_unlock_without_a_holder(store: PostgresStateStore) -> None:
    assert store.force_unlock() is None


# -- passwords stay out of messages ----------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://postgres:{SECRET}@127.0.0.1:1/test",  # nothing listens on port 1
        f"postgres://postgres:{SECRET}@127.0.0.1:1/test?connect_timeout=3",
        f"postgresql://postgres@127.0.0.1:1/test?password={SECRET}",
        f"postgresql://postgres:{SECRET}@[::1/test",  # libpq quotes a malformed URL whole
        f"postgresql://postgres:{SECRET}%zz@127.0.0.1:1/test",
        f"postgresql://postgres:{SECRET}@127.0.0.1:1/test?bogus=1",
        f"host=127.0.0.1 port=1 password={SECRET} dbname",
    ],
)
def test_no_password_in_error_messages(url: str) -> None:
    with pytest.raises(StateError) as refused:
        PostgresStateStore(url)
    assert SECRET not in "".join(traceback.format_exception(refused.value))
    with pytest.raises(StateError) as dispatched:
        open_state(url) if "://" in url else PostgresStateStore(url)
    assert SECRET not in "".join(traceback.format_exception(dispatched.value))


def test_no_password_in_server_errors(server_url: str) -> None:
    # A real server answering "no such database" to a URL that carries a password.
    conninfo = make_conninfo(server_url, password=SECRET, dbname="reconciler_no_such_db")
    with pytest.raises(StateError, match="cannot connect") as refused:
        PostgresStateStore(conninfo)
    assert SECRET not in "".join(traceback.format_exception(refused.value))
