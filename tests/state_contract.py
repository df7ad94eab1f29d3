"""The behaviour every StateStore keeps, as plain functions over a store factory.

A backend's test module runs each check in CONTRACT against its own factory, so SQLite and
PostgreSQL are held to the very same answers. A factory call opens a new handle on one state
that is empty when the check starts; checks that reopen the state or contend for the lock call
it more than once, and close every handle they open.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest

from reconciler.core.model import (
    JournalEntry,
    JournalOp,
    Liveness,
    Observation,
    RecordHead,
    SessionRecord,
    Status,
)
from reconciler.core.settled import SettledFile, SettledSession
from reconciler.errors import LockHeld, StateError
from reconciler.state.base import RecordChange, StateStore

StoreFactory = Callable[[], StateStore]


@contextmanager
def opened(open_store: StoreFactory) -> Iterator[StateStore]:
    with closing(open_store()) as store:
        yield store


def full_record(name: str, **changes: Any) -> SessionRecord:
    """A record with every field away from its default, so a lost field cannot go unnoticed."""
    record = SessionRecord(
        name=name,
        provider="volcengine",
        identity=f"app-1/room-{name}/task-{name}",
        fingerprint="sha256:" + "ab" * 32,
        spec_json='{"AgentConfig":{"TargetUserId":["u1"]},"AppId":"app-1","Token":"<redacted>"}',
        status=Status.RUNNING,
        provider_ids={"TaskId": f"task-{name}", "RoomId": f"room-{name}"},
        announcements_delivered=("maint-1121", "welcome-\u00e9t\u00e9"),
        protect=True,
        labels={"team": "support", "tier": "\u91d1"},
        created_at="2025-01-02T03:04:05Z",
        updated_at="2025-01-02T03:04:06.789Z",
        last_error="HTTP 500 InternalError: try again",
        source="sessions/été.json",
        attempt="a1b2c3d4e5f60718",
        observation=Observation(
            Liveness.ENDED,
            "Finished",
            "2025-01-02T03:04:07Z",
            ended_at="2025-01-02T03:04:00Z",
            reason="the user hung up",
        ),
    )
    return replace(record, **changes)


def _intent(store: StateStore, name: str, op: JournalOp = JournalOp.START) -> int:
    return store.begin_intent(name, op, "volcengine", f"app-1/room-{name}", '{"spec":{}}')


def check_new_state_is_empty(open_store: StoreFactory) -> None:
    with opened(open_store) as store:
        meta = store.meta()
        assert meta.serial == 0
        assert len(meta.lineage) == 32
        int(meta.lineage, 16)  # hex
        assert len(meta.fingerprint_key) == 32
        assert store.list_records() == []
        assert store.get_record("missing") is None
        assert store.pending_intents() == []
        assert store.recent_journal(10) == []
        assert store.lock_holder() is None


def check_meta_is_stable_across_reopen(open_store: StoreFactory) -> None:
    with opened(open_store) as store:
        first = store.meta()
        store.put_record(full_record("a"))
    with opened(open_store) as store:
        again = store.meta()
    assert (again.lineage, again.fingerprint_key) == (first.lineage, first.fingerprint_key)
    assert again.serial == first.serial + 1


def check_record_round_trip(open_store: StoreFactory) -> None:
    record = full_record("lobby-host")
    bare = SessionRecord("bare", "aliyun", "inst-1", "fp", "{}")
    with opened(open_store) as store:
        store.put_record(record)
        store.put_record(bare)
        assert store.get_record("lobby-host") == record
        assert store.get_record("bare") == bare
    with opened(open_store) as store:
        loaded = store.get_record("lobby-host")
        assert loaded == record
        assert loaded is not None
        assert isinstance(loaded.announcements_delivered, tuple)
        assert loaded.status is Status.RUNNING
        assert store.get_record("bare") == bare


def check_records_are_listed_by_name(open_store: StoreFactory) -> None:
    with opened(open_store) as store:
        for name in ("m", "b", "z", "a"):
            store.put_record(full_record(name))
        assert [r.name for r in store.list_records()] == ["a", "b", "m", "z"]


def check_put_replaces(open_store: StoreFactory) -> None:
    with opened(open_store) as store:
        store.put_record(full_record("a"))
        replacement = full_record("a", fingerprint="new", labels={}, last_error=None)
        store.put_record(replacement)
        assert store.list_records() == [replacement]


def check_serial_moves_exactly_on_record_changes(open_store: StoreFactory) -> None:
    with opened(open_store) as store:

        def serial() -> int:
            return store.meta().serial

        store.put_record(full_record("a"))
        assert serial() == 1
        store.put_record(full_record("a", fingerprint="other"))
        assert serial() == 2
        assert store.delete_record("missing") is False
        assert serial() == 2
        assert store.delete_record("a") is True
        assert serial() == 3
        assert store.get_record("a") is None

        # Journal bookkeeping alone never moves the serial.
        entry = _intent(store, "b")
        assert serial() == 3
        store.finish_intent(entry, "failed", None)
        assert serial() == 3
        entry = _intent(store, "b", JournalOp.STOP)
        store.finish_intent(entry, "not_found", RecordChange(delete="never-recorded"))
        assert serial() == 3

        # A finish that changes the records moves it once, whatever the change holds.
        entry = _intent(store, "b")
        store.finish_intent(entry, "started", RecordChange(put=full_record("b")))
        assert serial() == 4
        store.put_record(full_record("c"))
        entry = _intent(store, "d")
        store.finish_intent(entry, "started", RecordChange(put=full_record("d"), delete="c"))
        assert serial() == 6
        assert [r.name for r in store.list_records()] == ["b", "d"]


def _settled(source: str, serial: int, *names: str) -> SettledFile:
    return SettledFile(
        source=source,
        digest="d-" + source,
        context="c-" + source,
        serial=serial,
        sessions=tuple(SettledSession(n, "volcengine", f"app/room-{n}/{n}") for n in names),
        references=("${env:A}", "${file:/run/k}"),
    )


def check_record_heads_are_the_records_in_short(open_store: StoreFactory) -> None:
    ended = Observation(Liveness.ENDED, "Finished", "2026-01-01T00:00:00Z")
    running = Observation(Liveness.RUNNING, "Executing", "2026-01-01T00:00:00Z")
    with opened(open_store) as store:
        assert store.record_heads() == []
        store.put_record(full_record("c", observation=ended))
        store.put_record(full_record("a", observation=None))
        store.put_record(full_record("b", provider="aliyun", identity="x", observation=running))
        heads = store.record_heads()
        records = store.list_records()
        ends = [r.observation is not None and r.observation.ended for r in records]
        assert heads == [
            RecordHead(r.name, r.provider, r.identity, end)
            for r, end in zip(records, ends, strict=True)
        ]
        assert [h.ended for h in heads] == [False, False, True]


def check_settled_files_are_kept_for_their_serial_only(open_store: StoreFactory) -> None:
    with opened(open_store) as store:
        assert store.settled_files() == []
        store.put_record(full_record("a"))
        first = [_settled("d/a.json", 1, "a", "b"), _settled("d/empty.json", 1)]
        assert store.record_settled(first, 1) is True
        assert store.meta().serial == 1  # a cache of verdicts: the records did not move
    with opened(open_store) as store:  # and kept across a reopen
        assert sorted(store.settled_files(), key=lambda f: f.source) == first
        # Another apply at the same serial: its files join (or replace) the others.
        again = _settled("d/a.json", 1, "a")
        assert store.record_settled([again, _settled("e/c.json", 1, "c")], 1) is True
        assert sorted(f.source for f in store.settled_files()) == [
            "d/a.json",
            "d/empty.json",
            "e/c.json",
        ]
        assert [f for f in store.settled_files() if f.source == "d/a.json"] == [again]
        # Found at a serial the state has left: nothing is written, nothing is dropped.
        store.put_record(full_record("b"))
        assert store.record_settled([_settled("x.json", 1, "x")], 1) is False
        assert len(store.settled_files()) == 3
        # At the new serial: the files of every other serial are dropped.
        assert store.record_settled([_settled("d/a.json", 2, "a")], 2) is True
        assert store.settled_files() == [_settled("d/a.json", 2, "a")]
        assert store.record_settled([], 2) is True
        assert store.settled_files() == [_settled("d/a.json", 2, "a")]
        assert store.meta().serial == 2


def check_finish_intent_applies_its_change(open_store: StoreFactory) -> None:
    record = full_record("a")
    with opened(open_store) as store:
        start = _intent(store, "a")
        assert store.get_record("a") is None
        store.finish_intent(start, "started", RecordChange(put=record))
        assert store.get_record("a") == record
        stop = _intent(store, "a", JournalOp.STOP)
        store.finish_intent(stop, "stopped", RecordChange(delete="a"))
        assert store.get_record("a") is None
        assert store.pending_intents() == []


def check_failed_finish_changes_nothing(open_store: StoreFactory) -> None:
    """finish_intent is one transaction: when it fails, its record change is not applied."""
    with opened(open_store) as store:
        store.put_record(full_record("kept"))
        entry = _intent(store, "a")
        store.finish_intent(entry, "started", None)
        serial = store.meta().serial
        with pytest.raises(StateError):
            store.finish_intent(entry, "again", RecordChange(put=full_record("a")))
        with pytest.raises(StateError):
            store.finish_intent(entry + 1000, "started", RecordChange(delete="kept"))
        assert store.meta().serial == serial
        assert [r.name for r in store.list_records()] == ["kept"]
        assert store.recent_journal(1)[0].outcome == "started"


def check_pending_intents_oldest_first(open_store: StoreFactory) -> None:
    with opened(open_store) as store:
        first = store.begin_intent("a", JournalOp.START, "volcengine", "app/room/task", '{"x":1}')
        second = _intent(store, "b", JournalOp.STOP)
        third = _intent(store, "c", JournalOp.UPDATE)
        assert first < second < third
        store.finish_intent(second, "stopped", None)
        pending = store.pending_intents()
        assert [e.id for e in pending] == [first, third]
        entry = pending[0]
        assert (entry.name, entry.op, entry.provider, entry.identity, entry.payload_json) == (
            "a",
            JournalOp.START,
            "volcengine",
            "app/room/task",
            '{"x":1}',
        )
        assert isinstance(entry.op, JournalOp)
        assert entry.outcome is None and entry.finished_at is None
        assert_utc_timestamp(entry.started_at)
    with opened(open_store) as store:
        assert [e.id for e in store.pending_intents()] == [first, third]
        assert store.pending_intents()[1].op is JournalOp.UPDATE


def check_recent_journal_newest_first(open_store: StoreFactory) -> None:
    with opened(open_store) as store:
        ids = [_intent(store, f"s{i}") for i in range(5)]
        store.finish_intent(ids[1], "started", None)
        recent = store.recent_journal(3)
        assert [e.id for e in recent] == [ids[4], ids[3], ids[2]]
        everything = store.recent_journal(100)
        assert [e.id for e in everything] == list(reversed(ids))
        finished = _by_id(everything)[ids[1]]
        assert finished.outcome == "started"
        assert finished.finished_at is not None
        assert_utc_timestamp(finished.finished_at)
        assert store.recent_journal(0) == []


def check_lock_excludes_other_handles(open_store: StoreFactory) -> None:
    with opened(open_store) as holder, opened(open_store) as other:
        with holder.lock("apply lobby"):
            seen = other.lock_holder()
            assert seen is not None
            assert (seen.pid, seen.host, seen.command) == (
                os.getpid(),
                socket.gethostname(),
                "apply lobby",
            )
            assert_utc_timestamp(seen.since)
            with pytest.raises(LockHeld) as refused, other.lock("plan"):
                pass  # pragma: no cover - the lock is held
            assert refused.value.holder == seen
            assert "apply lobby" in str(refused.value)
        assert other.lock_holder() is None
        with other.lock("plan"):
            assert holder.lock_holder() is not None
        assert holder.lock_holder() is None


def check_lock_is_released_on_error(open_store: StoreFactory) -> None:
    with opened(open_store) as store, opened(open_store) as other:
        with pytest.raises(RuntimeError), store.lock("apply"):
            raise RuntimeError("boom")
        assert other.lock_holder() is None
        with other.lock("apply"):
            pass


def assert_utc_timestamp(value: str) -> None:
    assert datetime.fromisoformat(value).utcoffset() == timedelta(0)


def _by_id(entries: list[JournalEntry]) -> dict[int, JournalEntry]:
    return {entry.id: entry for entry in entries}


CONTRACT: tuple[Callable[[StoreFactory], None], ...] = (
    check_new_state_is_empty,
    check_meta_is_stable_across_reopen,
    check_record_round_trip,
    check_records_are_listed_by_name,
    check_put_replaces,
    check_serial_moves_exactly_on_record_changes,
    check_settled_files_are_kept_for_their_serial_only,
    check_record_heads_are_the_records_in_short,
    check_finish_intent_applies_its_change,
    check_failed_finish_changes_nothing,
    check_pending_intents_oldest_first,
    check_recent_journal_newest_first,
    check_lock_excludes_other_handles,
    check_lock_is_released_on_error,
)
