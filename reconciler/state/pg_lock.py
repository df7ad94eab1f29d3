"""Whether a PostgreSQL writer lock is still held, asked on the lock's own connection.

The advisory lock lives exactly as long as the session that took it, and psycopg never
reconnects silently: if `state unlock` terminated that backend, the next statement on the
connection fails, and a live session that somehow lost the lock no longer shows it in pg_locks.
Either way the holder stops at once (LockLost) instead of writing beside a new holder.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import LiteralString

import psycopg
from psycopg.rows import DictRow

from reconciler.errors import LockLost, StateError

# Our own backend's granted hold on the key (a bigint key shows as its high and low 32 bits).
_HELD_BY_US: LiteralString = """
    SELECT EXISTS (
        SELECT 1 FROM pg_catalog.pg_locks
        WHERE locktype = 'advisory' AND granted AND pid = pg_catalog.pg_backend_pid()
          AND classid = %s::oid AND objid = %s::oid AND objsubid = 1
    ) AS held
"""


class PgLockHandle:
    """The handle `PostgresStateStore.lock()` yields; `verify()` costs one round trip.

    `mutex` is the store's: the store writes through this session while it holds the lock,
    and a check must not run in the middle of another thread's transaction."""

    def __init__(
        self,
        conn: psycopg.Connection[DictRow],
        key: int,
        location: str,
        mutex: AbstractContextManager[object],
    ) -> None:
        self.conn = conn
        unsigned = key & 0xFFFF_FFFF_FFFF_FFFF
        self._key_parts = (unsigned >> 32, unsigned & 0xFFFF_FFFF)
        self._location = location
        self._mutex = mutex
        self._lost = False
        self.released = False

    def verify(self) -> None:
        if self.released:
            raise StateError(f"the writer lock on {self._location} was already released")
        if self._lost:  # once lost, never trusted again, even if a query were to succeed
            raise self.lost()
        with self._mutex:
            try:
                row = self.conn.execute(_HELD_BY_US, self._key_parts).fetchone()
            except psycopg.Error:
                row = None  # the session is gone (`state unlock`), and so is the lock
        if row is None or not row["held"]:
            raise self.lost()

    def lost(self) -> LockLost:
        """The error to raise once the lock is known to be gone; it stays gone."""
        self._lost = True
        return LockLost(
            f"the writer lock on {self._location} was taken away (state unlock?) while this "
            "process held it: stopping at once; calls already sent stay pending for the next "
            "apply to finish"
        )
