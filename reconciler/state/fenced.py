"""A store whose every write first checks that the writer lock is still ours.

An apply that was paused (SIGSTOP, a long GC, a frozen VM) while `state unlock` handed the lock
to another apply must not write beside the new holder: it would finish or overwrite intents the
new holder is recovering. Reads pass through unchecked; they cannot hurt anyone.
"""

from __future__ import annotations

from collections.abc import Sequence

from reconciler.core.model import JournalOp, SessionRecord
from reconciler.core.settled import SettledFile
from reconciler.state.base import LockHandle, RecordChange, StateStore
from reconciler.state.wrapped import WrappedStore


class FencedStore(WrappedStore):
    """`store`, with `held.verify()` (raising LockLost) before each write."""

    def __init__(self, store: StateStore, held: LockHandle) -> None:
        super().__init__(store)
        self._held = held

    def put_record(self, record: SessionRecord) -> None:
        self._held.verify()
        super().put_record(record)

    def delete_record(self, name: str) -> bool:
        self._held.verify()
        return super().delete_record(name)

    def rename_record(self, old: str, new: str) -> None:
        self._held.verify()
        super().rename_record(old, new)

    def record_settled(self, files: Sequence[SettledFile], serial: int) -> bool:
        self._held.verify()
        return super().record_settled(files, serial)

    def begin_intent(
        self, name: str, op: JournalOp, provider: str, identity: str, payload_json: str
    ) -> int:
        self._held.verify()
        return super().begin_intent(name, op, provider, identity, payload_json)

    def finish_intent(self, entry_id: int, outcome: str, change: RecordChange | None) -> None:
        self._held.verify()
        super().finish_intent(entry_id, outcome, change)
