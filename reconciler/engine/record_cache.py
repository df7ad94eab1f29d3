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
from collections.abc import Callable
from functools import partial
from typing import TypeVar

from reconciler.core.model import JournalOp, SessionRecord
from reconciler.state.base import RecordChange, StateStore
from reconciler.state.wrapped import WrappedStore

T = TypeVar("T")


class CachingStore(WrappedStore):
    """`store`, with its records remembered and kept up to date by the writes made here."""

    def __init__(self, store: StateStore) -> None:
        super().__init__(store)
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

    # -- the writes, each applied to the cache once the store took it ---------------------

    def put_record(self, record: SessionRecord) -> None:
        self._tracked(partial(super().put_record, record), RecordChange(put=record))

    def delete_record(self, name: str) -> bool:
        return self._tracked(partial(super().delete_record, name), RecordChange(delete=name))

    def rename_record(self, old: str, new: str) -> None:
        self._lost_track()  # rare (state mv): simply list again
        super().rename_record(old, new)

    def begin_intent(
        self, name: str, op: JournalOp, provider: str, identity: str, payload_json: str
    ) -> int:
        begin = partial(super().begin_intent, name, op, provider, identity, payload_json)
        return self._tracked(begin, None)

    def finish_intent(self, entry_id: int, outcome: str, change: RecordChange | None) -> None:
        self._tracked(partial(super().finish_intent, entry_id, outcome, change), change)

    def _tracked(self, write: Callable[[], T], change: RecordChange | None) -> T:
        try:
            result = write()
        except BaseException:
            self._lost_track()
            raise
        self._wrote(change)
        return result
