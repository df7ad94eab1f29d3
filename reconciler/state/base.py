"""The contract every state store keeps (SQLite and PostgreSQL give the same answers).

Every method that changes something is one transaction. The serial is bumped by every change to
the records (not by journal bookkeeping), so a saved plan can tell whether the records it was
made against have moved on.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from reconciler.core.model import JournalEntry, JournalOp, RecordHead, SessionRecord, StateMeta
from reconciler.core.settled import SettledFile
from reconciler.errors import LockHolder


@dataclass(frozen=True, slots=True)
class RecordChange:
    """What finishing an intent does to the records, applied in the same transaction."""

    put: SessionRecord | None = None
    delete: str | None = None


class LockHandle(Protocol):
    """The writer lock as its holder sees it while holding it."""

    def verify(self) -> None:
        """Raise LockLost unless this process still holds the lock (`state unlock` may have
        taken it away); cheap enough to call before every provider call and journal write."""
        ...


class StateStore(Protocol):
    # Where the state is, for messages: a file path, or a PostgreSQL URL without its password.
    location: str

    def meta(self) -> StateMeta:
        """Lineage, serial and fingerprint key; created on first use."""
        ...

    def list_records(self) -> list[SessionRecord]:
        """Every record, ordered by name."""
        ...

    def get_record(self, name: str) -> SessionRecord | None: ...

    def record_heads(self) -> list[RecordHead]:
        """Every record's head (name, provider, identity, ended), ordered by name: what a plan
        needs of the records it does not compare, for a fraction of list_records' cost."""
        ...

    def put_record(self, record: SessionRecord) -> None:
        """Insert or replace one record and bump the serial."""
        ...

    def delete_record(self, name: str) -> bool:
        """Remove one record (bumping the serial); False when there was none."""
        ...

    def rename_record(self, old: str, new: str) -> None:
        """Give record `old` the name `new`, every other field kept, bumping the serial; raise
        StateError when `old` is not recorded, `new` is, or either has a pending intent."""
        ...

    def settled_files(self) -> list[SettledFile]:
        """What the last applies found settled (see core/settled.py), in no particular order."""
        ...

    def record_settled(self, files: Sequence[SettledFile], serial: int) -> bool:
        """Keep `files`, found settled against the records at `serial`, dropping those found
        at any other serial; nothing is written (False) when the state is no longer at
        `serial`. The serial does not move: the records do not change."""
        ...

    def begin_intent(
        self, name: str, op: JournalOp, provider: str, identity: str, payload_json: str
    ) -> int:
        """Write an intent before a provider call; returns its journal id."""
        ...

    def finish_intent(self, entry_id: int, outcome: str, change: RecordChange | None) -> None:
        """Record the outcome of an intent and its effect on the records, atomically."""
        ...

    def pending_intents(self) -> list[JournalEntry]:
        """Intents whose outcome is unknown (the process died during the call), oldest first."""
        ...

    def recent_journal(self, limit: int) -> list[JournalEntry]:
        """The newest journal entries, newest first."""
        ...

    def lock(self, command: str) -> AbstractContextManager[LockHandle]:
        """Hold the writer lock; raise LockHeld naming the holder when another process has it.

        The lock must be released by the OS or the server when its holder dies. The handle
        tells whether it is still held: a writer verifies it before each call and write.
        """
        ...

    def lock_holder(self) -> LockHolder | None:
        """Who holds the writer lock now, if anyone."""
        ...

    def close(self) -> None: ...


def rename_refusal(
    old: str, new: str, old_recorded: bool, new_recorded: bool, pending_name: str | None
) -> str | None:
    """Why `rename_record(old, new)` must not happen, or None; shared so that both stores
    refuse in the same words."""
    if not old_recorded:
        return f'no session named "{old}" is recorded'
    if old == new:
        return f'"{old}" already has that name'
    if new_recorded:
        return f'a session named "{new}" is already recorded: `state mv` never overwrites one'
    if pending_name is not None:
        return (
            f'"{pending_name}" has a call of unknown outcome pending: run `reconciler apply` '
            "on the manifests to finish it first"
        )
    return None
