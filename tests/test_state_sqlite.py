"""The SQLite state store: the shared contract, plus what only a local file has (file modes,
schema versions, a flock that dies with its process, journal pruning)."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from state_contract import CONTRACT, StoreFactory, full_record

from reconciler.core.model import JournalOp
from reconciler.errors import LockHeld, StateError
from reconciler.state.base import RecordChange
from reconciler.state.open import open_state
from reconciler.state.sqlite import JOURNAL_RETENTION, SCHEMA_VERSION, SqliteStateStore

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "nested" / "dir" / "state.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[SqliteStateStore]:
    with SqliteStateStore(db_path) as opened:
        yield opened


@pytest.mark.parametrize("check", CONTRACT, ids=lambda check: check.__name__)
def test_contract(check: Callable[[StoreFactory], None], db_path: Path) -> None:
    check(lambda: SqliteStateStore(db_path))


# -- files -------------------------------------------------------------------------------


def test_creates_parent_directory_and_private_files(db_path: Path) -> None:
    previous = os.umask(0o002)  # a permissive umask must not leak into the state files
    try:
        with SqliteStateStore(db_path) as store:
            store.put_record(full_record("a"))
            with store.lock("apply"):
                modes = {
                    path.name: stat.S_IMODE(path.stat().st_mode)
                    for path in db_path.parent.iterdir()
                }
    finally:
        os.umask(previous)
    assert modes == {
        "state.db": 0o600,
        "state.db-wal": 0o600,
        "state.db-shm": 0o600,
        "state.db.lock": 0o600,
    }
    assert stat.S_IMODE(db_path.parent.stat().st_mode) == 0o700


def test_schema_version_is_recorded(store: SqliteStateStore, db_path: Path) -> None:
    with sqlite3.connect(db_path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {row[0] for row in raw.execute("SELECT name FROM sqlite_master")}
    assert {"meta", "sessions", "journal"} <= tables


def test_a_version_2_state_is_migrated_keeping_its_records(db_path: Path) -> None:
    """Version 3 adds the Start's attempt and the last observation; older records have none.
    Version 4 adds the settled files, empty after the migration."""
    with SqliteStateStore(db_path) as store:
        store.put_record(full_record("old", attempt=None, observation=None))
    raw = sqlite3.connect(db_path)
    with raw:
        raw.execute("DROP TABLE settled_files")
        raw.execute("ALTER TABLE sessions DROP COLUMN observation")
        raw.execute("ALTER TABLE sessions DROP COLUMN attempt")
        raw.execute("PRAGMA user_version = 2")
    raw.close()
    with SqliteStateStore(db_path) as store:
        assert store.get_record("old") == full_record("old", attempt=None, observation=None)
        store.put_record(full_record("new"))
        assert store.get_record("new") == full_record("new")
        assert store.settled_files() == []
    with sqlite3.connect(db_path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4


def test_newer_schema_is_refused(db_path: Path) -> None:
    SqliteStateStore(db_path).close()
    raw = sqlite3.connect(db_path)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()
    with pytest.raises(StateError) as refused:
        SqliteStateStore(db_path)
    assert str(refused.value) == (
        f"state at {db_path} has schema version {SCHEMA_VERSION + 1}; this reconciler knows up"
        f" to {SCHEMA_VERSION}: upgrade reconciler"
    )


def test_garbage_file_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"definitely not a database\n" * 200)
    with pytest.raises(StateError, match="is not a usable SQLite database") as refused:
        SqliteStateStore(path)
    assert str(path) in str(refused.value)


def test_foreign_sqlite_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE TABLE things (x)")
    raw.close()
    with pytest.raises(StateError, match="not a reconciler state"):
        SqliteStateStore(path)
    with sqlite3.connect(path) as raw:  # left untouched: no tables added
        names = [row[0] for row in raw.execute("SELECT name FROM sqlite_master")]
    raw.close()
    assert names == ["things"]


def test_empty_existing_file_becomes_a_state(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.touch()
    with SqliteStateStore(path) as store:
        assert store.meta().serial == 0


def test_unusable_location_is_a_state_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StateError, match="cannot create state"):
        SqliteStateStore(tmp_path / "file" / "state.db")


def test_corrupt_record_is_a_state_error(store: SqliteStateStore, db_path: Path) -> None:
    store.put_record(full_record("a"))
    with sqlite3.connect(db_path) as raw:
        raw.execute("UPDATE sessions SET labels = '[1, 2]'")
    raw.close()
    with pytest.raises(StateError, match="record 'a' is corrupt"):
        store.list_records()


def test_closed_store_refuses_use(db_path: Path) -> None:
    store = SqliteStateStore(db_path)
    store.close()
    store.close()
    with pytest.raises(StateError, match="closed"):
        store.meta()


# -- journal ------------------------------------------------------------------------------


def test_finished_entries_are_pruned_pending_ones_kept(db_path: Path) -> None:
    with SqliteStateStore(db_path, journal_retention=3) as store:
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


def test_default_retention_keeps_the_newest_ten_thousand(db_path: Path) -> None:
    SqliteStateStore(db_path).close()
    with sqlite3.connect(db_path) as raw:  # one bulk transaction instead of 10,000 finishes
        raw.executemany(
            "INSERT INTO journal (name, op, provider, identity, payload_json, started_at,"
            " outcome, finished_at) VALUES (?, 'start', 'volcengine', 'x', '{}', 't', 'ok', 't')",
            [(f"s{index}",) for index in range(JOURNAL_RETENTION)],
        )
    raw.close()
    with SqliteStateStore(db_path) as store:
        entry = store.begin_intent("last", JournalOp.START, "volcengine", "x", "{}")
        store.finish_intent(entry, "ok", None)
        journal = store.recent_journal(JOURNAL_RETENTION + 10)
    assert len(journal) == JOURNAL_RETENTION == 10_000
    assert journal[0].id == entry
    assert journal[-1].name == "s1"  # only the oldest, s0, went


def test_journal_times_come_from_the_clock(db_path: Path) -> None:
    moments = iter(
        [
            datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC),  # meta created_at
            datetime(2025, 3, 1, 12, 0, 1, 500000, tzinfo=UTC),
            datetime(2025, 3, 1, 21, 0, 2, tzinfo=timezone(timedelta(hours=9))),
        ]
    )
    with SqliteStateStore(db_path, clock=lambda: next(moments)) as store:
        entry = store.begin_intent("a", JournalOp.START, "volcengine", "x", "{}")
        store.finish_intent(entry, "ok", None)
        (logged,) = store.recent_journal(1)
    assert logged.started_at == "2025-03-01T12:00:01.500Z"
    assert logged.finished_at == "2025-03-01T12:00:02.000Z"


def test_threads_share_one_store(store: SqliteStateStore) -> None:
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


# -- lock ---------------------------------------------------------------------------------

_HOLD_LOCK = """
import sys, time
from reconciler.state.sqlite import SqliteStateStore
store = SqliteStateStore(sys.argv[1])
with store.lock(sys.argv[2]):
    print("locked", flush=True)
    time.sleep(600)
"""


def test_lock_held_by_another_process_dies_with_it(db_path: Path) -> None:
    SqliteStateStore(db_path).close()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), *sys.path])}
    child = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(db_path), "apply lobby/"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        if line != "locked\n":
            child.kill()
            pytest.fail(f"lock holder did not start: {child.communicate()[1]}")
        with SqliteStateStore(db_path) as store:
            holder = store.lock_holder()
            assert holder is not None
            assert (holder.pid, holder.host, holder.command) == (
                child.pid,
                socket.gethostname(),
                "apply lobby/",
            )
            with pytest.raises(LockHeld) as refused, store.lock("plan"):
                pass  # pragma: no cover - the lock is held
            assert refused.value.holder == holder
            assert f"pid {child.pid}" in str(refused.value)

            child.send_signal(signal.SIGKILL)  # no cleanup runs: the kernel must free the lock
            child.wait()
            assert store.lock_holder() is None
            with store.lock("apply"):
                mine = store.lock_holder()
            assert mine is not None and mine.pid == os.getpid()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.communicate()


def test_release_clears_the_holder(store: SqliteStateStore) -> None:
    with store.lock("apply"):
        assert store.lock_holder() is not None
        assert store.lock_path.read_text().startswith("{")
    assert store.lock_path.read_text() == ""
    assert store.lock_holder() is None


def test_second_lock_in_the_same_store_is_refused(store: SqliteStateStore) -> None:
    with store.lock("apply"):
        with pytest.raises(LockHeld) as refused, store.lock("apply again"):
            pass  # pragma: no cover - the lock is held
        holder = refused.value.holder
        assert holder is not None and holder.command == "apply"


def test_lock_holder_without_a_lock_file(store: SqliteStateStore) -> None:
    assert not store.lock_path.exists()
    assert store.lock_holder() is None
    assert not store.lock_path.exists()


# -- open_state ---------------------------------------------------------------------------


def test_open_state_plain_path(db_path: Path) -> None:
    store = open_state(str(db_path))
    try:
        assert isinstance(store, SqliteStateStore)
        assert store.path == db_path
    finally:
        store.close()


def test_open_state_sqlite_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = open_state("sqlite:///rel/state.db")
    absolute = open_state(f"sqlite:///{tmp_path}/abs/state.db")
    try:
        assert isinstance(relative, SqliteStateStore)
        assert isinstance(absolute, SqliteStateStore)
        assert relative.path == tmp_path / "rel" / "state.db"
        assert absolute.path == tmp_path / "abs" / "state.db"
    finally:
        relative.close()
        absolute.close()
    assert (tmp_path / "rel" / "state.db").exists()
    assert (tmp_path / "abs" / "state.db").exists()


@pytest.mark.parametrize("url", ["", "  ", "sqlite://", "sqlite://host/x.db", "mysql://db/x"])
def test_open_state_bad_locations(url: str) -> None:
    with pytest.raises(StateError):
        open_state(url)


@pytest.mark.parametrize("url", ["postgresql://u:secret@db/x", "postgres://u:secret@db/x"])
def test_open_state_postgres_without_its_module(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # None in sys.modules makes the import fail, as if the module had not been written.
    monkeypatch.setitem(sys.modules, "reconciler.state.postgres", None)
    with pytest.raises(
        StateError, match=r"PostgreSQL state needs reconciler\.state\.postgres"
    ) as e:
        open_state(url)
    assert "secret" not in str(e.value)
