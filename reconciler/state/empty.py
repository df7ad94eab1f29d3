"""What a read-only command sees where no state exists yet: nothing recorded, nothing pending.

`plan`, `state list` and `state show` must not create a state (a mistyped RECONCILER_STATE would
otherwise leave files or tables behind and silently plan everything as new). They read this
instead, and say that they did. It refuses every write: a command that writes opens the state
with `create=True`.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from contextlib import AbstractContextManager

from reconciler.core.model import JournalEntry, JournalOp, RecordHead, SessionRecord, StateMeta
from reconciler.core.settled import SettledFile
from reconciler.errors import LockHolder, StateError
from reconciler.state.base import LockHandle, RecordChange


class EmptyState:
    """A StateStore with no records, no journal and no lock, for a state not created yet."""

    def __init__(self, location: str) -> None:
        self.location = location
        # Fingerprints made against it are compared with nothing and never stored; a random
        # key keeps them from being comparable with any real state's.
        self._meta = StateMeta(lineage="", serial=0, fingerprint_key=secrets.token_bytes(32))

    def meta(self) -> StateMeta:
        return self._meta

    def list_records(self) -> list[SessionRecord]:
        return []

    def get_record(self, name: str) -> SessionRecord | None:
        return None

    def record_heads(self) -> list[RecordHead]:
        return []

    def put_record(self, record: SessionRecord) -> None:
        raise self._read_only()

    def delete_record(self, name: str) -> bool:
        raise self._read_only()

    def rename_record(self, old: str, new: str) -> None:
        raise self._read_only()

    def settled_files(self) -> list[SettledFile]:
        return []

    def record_settled(self, files: Sequence[SettledFile], serial: int) -> bool:
        raise self._read_only()

    def begin_intent(
        self, name: str, op: JournalOp, provider: str, identity: str, payload_json: str
    ) -> int:
        raise self._read_only()

    def finish_intent(self, entry_id: int, outcome: str, change: RecordChange | None) -> None:
        raise self._read_only()

    def pending_intents(self) -> list[JournalEntry]:
        return []

    def recent_journal(self, limit: int) -> list[JournalEntry]:
        return []

    def lock(self, command: str) -> AbstractContextManager[LockHandle]:
        raise self._read_only()

    def lock_holder(self) -> LockHolder | None:
        return None

    def close(self) -> None:
        """Nothing to close: nothing was opened."""

    def _read_only(self) -> StateError:
        return StateError(f"no state at {self.location} yet, and this command does not create one")
