"""A StateStore that passes every call to another one: the base of stores that add one thing
to the writes (FencedStore checks the lock, the engine's CachingStore remembers the records)
and leave the rest as it is."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager

from reconciler.core.model import JournalEntry, JournalOp, RecordHead, SessionRecord, StateMeta
from reconciler.core.settled import SettledFile
from reconciler.errors import LockHolder
from reconciler.state.base import LockHandle, RecordChange, StateStore


class WrappedStore:
    def __init__(self, store: StateStore) -> None:
        self._store = store
        self.location = store.location

    def meta(self) -> StateMeta:
        return self._store.meta()

    def list_records(self) -> list[SessionRecord]:
        return self._store.list_records()

    def get_record(self, name: str) -> SessionRecord | None:
        return self._store.get_record(name)

    def record_heads(self) -> list[RecordHead]:
        return self._store.record_heads()

    def put_record(self, record: SessionRecord) -> None:
        self._store.put_record(record)

    def delete_record(self, name: str) -> bool:
        return self._store.delete_record(name)

    def rename_record(self, old: str, new: str) -> None:
        self._store.rename_record(old, new)

    def settled_files(self) -> list[SettledFile]:
        return self._store.settled_files()

    def record_settled(self, files: Sequence[SettledFile], serial: int) -> bool:
        return self._store.record_settled(files, serial)

    def begin_intent(
        self, name: str, op: JournalOp, provider: str, identity: str, payload_json: str
    ) -> int:
        return self._store.begin_intent(name, op, provider, identity, payload_json)

    def finish_intent(self, entry_id: int, outcome: str, change: RecordChange | None) -> None:
        self._store.finish_intent(entry_id, outcome, change)

    def pending_intents(self) -> list[JournalEntry]:
        return self._store.pending_intents()

    def recent_journal(self, limit: int) -> list[JournalEntry]:
        return self._store.recent_journal(limit)

    def lock(self, command: str) -> AbstractContextManager[LockHandle]:
        return self._store.lock(command)

    def lock_holder(self) -> LockHolder | None:
        return self._store.lock_holder()

    def close(self) -> None:
        self._store.close()
