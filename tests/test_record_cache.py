"""The engine's record cache (engine/record_cache.py) against a real SQLite state: after any
sequence of writes through it, what it returns is exactly what listing the state returns, and a
write that did not go through it is noticed by the serial."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core.model import JournalOp, SessionRecord
from reconciler.engine.record_cache import CachingStore
from reconciler.state.base import RecordChange
from reconciler.state.sqlite import SqliteStateStore

NAMES = st.sampled_from(["a", "b", "c", "d"])
OPS = st.lists(
    st.tuples(st.sampled_from(["put", "delete", "finish-put", "finish-delete", "read"]), NAMES),
    max_size=25,
)


def record(name: str, version: int) -> SessionRecord:
    return SessionRecord(name, "volcengine", f"app/r-{name}/t-{name}", f"fp{version}", "{}")


@settings(max_examples=40, deadline=None)
@given(ops=OPS)
def test_the_cache_always_equals_a_listing(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, str]]
) -> None:
    root = tmp_path_factory.mktemp("cache")
    with SqliteStateStore(root / "state.db") as store:
        cached = CachingStore(store)
        assert cached.cached_records() == []
        for version, (op, name) in enumerate(ops):
            if op == "put":
                cached.put_record(record(name, version))
            elif op == "delete":
                cached.delete_record(name)
            elif op.startswith("finish"):
                entry = cached.begin_intent(name, JournalOp.START, "volcengine", name, "{}")
                change = (
                    RecordChange(put=record(name, version))
                    if op == "finish-put"
                    else RecordChange(delete=name)
                )
                cached.finish_intent(entry, "ok", change)
            assert cached.cached_records() == store.list_records()


def test_a_write_behind_its_back_is_noticed(tmp_path: Path) -> None:
    with SqliteStateStore(tmp_path / "state.db") as store:
        cached = CachingStore(store)
        cached.put_record(record("a", 1))
        assert [r.name for r in cached.cached_records()] == ["a"]
        store.put_record(record("b", 1))  # not through the cache (no lock would allow it)
        assert [r.name for r in cached.cached_records()] == ["a", "b"]
