"""The records a long-lived engine (the daemon's) keeps in memory between runs.

Listing 10,000 records costs more than everything else a no-change pass does. While the engine
holds the writer lock (or the leader lease) every write to the state is its own, and every one
goes through `CachingStore`, which applies the same change to the cached records once the
store has taken it. Between runs the cache is checked against the state's serial (one small
query): it is trusted only if the serial is the one seen after the engine's own last writes,
so a write by anyone else — impossible while the lock is held, but cheap to rule out — makes
the next run list everything again. A write that fails leaves the cache unknown (listed again).
"""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager

from reconciler.core.model import JournalEntry, JournalOp, SessionRecord, StateMeta
from reconciler.errors import LockHolder
from reconciler.state.base import LockHandle, RecordChange, StateStore


class CachingStore:
    """`store`, with its records remembered and kept up to date by the writes made here."""

    def __init__(self, store: StateStore) -> None:
        self._store = store
        self.location = store.location
        self._mutex = threading.Lock()  # writes come from worker threads
        self._records: dict[str, SessionRecord] | None = None
        self._serial: int | None = None  # the serial the cache is known to match
        self._ours = False  # written through here since `_serial` was read
        self._listing: list[SessionRecord] | None = None  # the sorted records, until a write

    def cached_records(self) -> list[SessionRecord]:
        """Every record, ordered by name: from memory when nothing but our own writes moved
        the serial since the cache was last in step with the state. The same list object
        while nothing was written (callers must not change it), so that callers can tell
        "unchanged" by identity."""
        meta = self._store.meta()
        with self._mutex:
            records = self._records
            if records is not None and (
                self._serial == meta.serial or (self._ours and self._serial is None)
            ):
                self._serial, self._ours = meta.serial, False
                if self._listing is None:
                    self._listing = [records[name] for name in sorted(records)]
                return self._listing
        listed = self._store.list_records()
        with self._mutex:
            self._records = {record.name: record for record in listed}
            self._serial, self._ours = meta.serial, False
            self._listing = listed
        return listed

    def known(self, name: str) -> SessionRecord | None:
        """The cached record of `name` (None: not recorded, or nothing cached yet)."""
        with self._mutex:
            return None if self._records is None else self._records.get(name)

    def _wrote(self, change: RecordChange | None) -> None:
        with self._mutex:
            if self._records is None:
                return
            if change is not None and change.delete is not None:
                self._records.pop(change.delete, None)
            if change is not None and change.put is not None:
                self._records[change.put.name] = change.put
            if change is not None and (change.put is not None or change.delete is not None):
                self._listing = None
            self._serial, self._ours = None, True

    def _lost_track(self) -> None:
        with self._mutex:
            self._records, self._serial, self._listing = None, None, None

    # -- StateStore -----------------------------------------------------------------------

    def meta(self) -> StateMeta:
        return self._store.meta()

    def list_records(self) -> list[SessionRecord]:
        return self._store.list_records()

    def get_record(self, name: str) -> SessionRecord | None:
        return self._store.get_record(name)

    def put_record(self, record: SessionRecord) -> None:
        try:
            self._store.put_record(record)
        except BaseException:
            self._lost_track()
            raise
        self._wrote(RecordChange(put=record))

    def delete_record(self, name: str) -> bool:
        try:
            deleted = self._store.delete_record(name)
        except BaseException:
            self._lost_track()
            raise
        self._wrote(RecordChange(delete=name))
        return deleted

    def rename_record(self, old: str, new: str) -> None:
        self._lost_track()  # rare (state mv): simply list again
        self._store.rename_record(old, new)

    def begin_intent(
        self, name: str, op: JournalOp, provider: str, identity: str, payload_json: str
    ) -> int:
        try:
            entry = self._store.begin_intent(name, op, provider, identity, payload_json)
        except BaseException:
            self._lost_track()
            raise
        self._wrote(None)
        return entry

    def finish_intent(self, entry_id: int, outcome: str, change: RecordChange | None) -> None:
        try:
            self._store.finish_intent(entry_id, outcome, change)
        except BaseException:
            self._lost_track()
            raise
        self._wrote(change)

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
