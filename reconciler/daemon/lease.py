"""Leadership between daemon replicas sharing PostgreSQL state: a lease that cannot outlive
a frozen or partitioned leader.

The lease is the state's writer lock (a session advisory lock, PostgresStateStore.lock()), so
it lives on the very session every write of the leader goes through: a leader that lost it can
write nothing (its session is gone, and psycopg never reconnects it). What the plain lock lacks
is a bound on how long a leader that stopped answering keeps it. The lease adds, on that session:

  - `idle_session_timeout` and `idle_in_transaction_session_timeout` = the lease: the server
    ends a session that has sent nothing for that long (a SIGSTOPped, hung or partitioned
    leader), which frees the lock for a standby;
  - server-side TCP keepalives and `tcp_user_timeout`, so the server also notices a dead peer
    when it was the one waiting to send;
  - a heartbeat thread (every lease/3: one round trip asking pg_locks whether we still hold it),
    so a healthy leader is never idle that long; a thread rather than a task so a busy event
    loop cannot starve it;
  - a local deadline: each confirmation counts from the moment its query was *sent*, and is
    trusted for 80% of the lease. The server cannot end the session earlier than a full lease
    after that moment, so by the time a standby can win, the old leader's own verify() already
    refuses — even if it was frozen in between and has not talked to the server since.
verify() before every provider call: the deadline check, then the round trip. Once lost, the
lease raises LockLost for good; the replica releases it and stands by (try_acquire again).

Client-side libpq keepalives must be in the connection string (the store opens the session):
`with_keepalives()` adds them to a state URL unless it already says otherwise, so that a
heartbeat into a partition fails within about a lease instead of hanging for the kernel's
default of many minutes.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import LiteralString

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from reconciler.errors import LockHeld, LockHolder, LockLost, StateError
from reconciler.state.pg_lock import PgLockHandle
from reconciler.state.postgres import PostgresStateStore

DEFAULT_LEASE_SECONDS = 15.0
MIN_LEASE_SECONDS = 1.0
# The share of the lease a confirmation is trusted for, counted from when it was sent.
TRUSTED_SHARE = 0.8
HEARTBEATS_PER_LEASE = 3

_SESSION_SETTINGS: tuple[LiteralString, ...] = (
    "idle_session_timeout",
    "idle_in_transaction_session_timeout",
    "tcp_user_timeout",
)


def with_keepalives(url: str, lease: float) -> str:
    """The state URL (or key=value conninfo) with libpq's client-side TCP keepalives and user
    timeout scaled to the lease, leaving any the user set alone."""
    present = conninfo_to_dict(url)
    wanted = {
        "keepalives": "1",
        "keepalives_idle": str(max(1, math.floor(lease / 3))),
        "keepalives_interval": str(max(1, math.floor(lease / 6))),
        "keepalives_count": "3",
        "tcp_user_timeout": str(int(lease * 1000)),
    }
    added = {key: value for key, value in wanted.items() if key not in present}
    if not added:
        return url
    if "://" in url:
        separator = "&" if "?" in url else "?"
        return url + separator + "&".join(f"{key}={value}" for key, value in added.items())
    return " ".join([url, *(f"{key}={value}" for key, value in added.items())])


class LeaderLease:
    """One replica's claim on leadership over `store`. Not re-entrant; thread-safe."""

    def __init__(
        self,
        store: PostgresStateStore,
        *,
        lease: float = DEFAULT_LEASE_SECONDS,
        command: str = "watch",
        on_lost: Callable[[LockLost], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if lease < MIN_LEASE_SECONDS:
            raise ValueError(f"a lease shorter than {MIN_LEASE_SECONDS:g} s cannot be kept")
        self._store = store
        self._lease = lease
        self._command = command
        self._on_lost = on_lost
        self._clock = clock
        self._mutex = threading.Lock()
        self._stack: ExitStack | None = None
        self._handle: PgLockHandle | None = None
        self._trusted_until = 0.0
        self._lost: LockLost | None = None
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self.holder: LockHolder | None = None  # who leads, as last seen by a failed attempt
        # The bounds the server reported on the lease's session right after setting them.
        self.session_bounds: dict[str, str] = {}

    @property
    def leading(self) -> bool:
        return self._handle is not None and self._lost is None

    @property
    def lost(self) -> LockLost | None:
        return self._lost

    @property
    def backend_pid(self) -> int | None:
        """The server process of the lease's session (what `state unlock` would terminate)."""
        return None if self._handle is None else int(self._handle.conn.info.backend_pid)

    def try_acquire(self) -> bool:
        """Lead if nobody does: True when this replica now holds the lease, False (with
        `holder` set) when another one does. Raises StateError when the server is unreachable."""
        if self._handle is not None:
            if self._lost is not None:
                raise StateError("release the lost lease before trying to acquire it again")
            return True
        stack = ExitStack()
        try:
            handle = stack.enter_context(self._store.lock(self._command))
        except LockHeld as held:
            stack.close()
            self.holder = held.holder
            return False
        try:
            sent = self._clock()
            self._configure(handle)
        except BaseException:
            stack.close()
            raise
        with self._mutex:
            self._stack, self._handle, self._lost = stack, handle, None
            self._trusted_until = sent + self._lease * TRUSTED_SHARE
            self.holder = None
            # One stop event per hold: a heartbeat of an earlier hold, still stuck in a query,
            # must not be started again by this one.
            self._stop = threading.Event()
        self._heartbeat = threading.Thread(
            target=self._beat, args=(self._stop,), name="reconciler-lease-heartbeat", daemon=True
        )
        self._heartbeat.start()
        return True

    def verify(self) -> None:
        """Raise LockLost unless the lease is certainly still ours; call before every provider
        call. One round trip on the lease's session."""
        handle = self._handle
        if handle is None:
            raise LockLost("this replica does not hold the leader lease")
        self._check_deadline()
        sent = self._clock()
        try:
            handle.verify()
        except LockLost as lost:
            raise self._lose(lost) from None
        except StateError as error:  # released meanwhile
            raise self._lose(LockLost(str(error))) from None
        with self._mutex:
            self._trusted_until = max(self._trusted_until, sent + self._lease * TRUSTED_SHARE)
        # The answer may have come after a freeze longer than the lease: it still proves only
        # that we held the lock when the server answered, which was within the deadline if now is.
        self._check_deadline()

    def release(self) -> None:
        """Give the lease up (or let go of a lost one), so that this replica can stand by.
        Never blocks for long: a session stuck in a query (a partition) is closed in the
        background once its query fails, which the keepalives bound."""
        self._stop.set()
        heartbeat, self._heartbeat = self._heartbeat, None
        if heartbeat is not None and heartbeat is not threading.current_thread():
            heartbeat.join(timeout=self._lease / HEARTBEATS_PER_LEASE)
        with self._mutex:
            stack, self._stack, self._handle = self._stack, None, None
        if stack is None:
            return
        if heartbeat is not None and heartbeat.is_alive():
            # Closing a libpq connection under a thread that is using it is not safe: wait
            # for that thread in another one.
            threading.Thread(target=_close_quietly, args=(stack,), daemon=True).start()
        else:
            _close_quietly(stack)

    def __enter__(self) -> LeaderLease:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    # -- inside ------------------------------------------------------------------------------

    def _configure(self, handle: PgLockHandle) -> None:
        """The server-side bounds on the lease's session (user-settable, PostgreSQL 14+)."""
        milliseconds = int(self._lease * 1000)
        keepalive = max(1, math.floor(self._lease / 3))
        statements: list[sql.SQL | sql.Composed] = [
            sql.SQL("SET {} = {}").format(sql.Identifier(name), sql.Literal(milliseconds))
            for name in _SESSION_SETTINGS
        ]
        statements += [
            sql.SQL("SET tcp_keepalives_idle = {}").format(sql.Literal(keepalive)),
            sql.SQL("SET tcp_keepalives_interval = {}").format(sql.Literal(keepalive)),
            sql.SQL("SET tcp_keepalives_count = 3"),
        ]
        try:
            for statement in statements:
                handle.conn.execute(statement)
            rows = handle.conn.execute(
                "SELECT name, setting FROM pg_catalog.pg_settings WHERE name = ANY(%s)",
                ([*_SESSION_SETTINGS, "tcp_keepalives_idle"],),
            ).fetchall()
        except psycopg.Error as error:
            raise StateError(f"cannot bound the leader lease's session: {error}") from None
        self.session_bounds = {str(row["name"]): str(row["setting"]) for row in rows}

    def _check_deadline(self) -> None:
        if self._lost is not None:
            raise self._lost
        if self._clock() >= self._trusted_until:
            raise self._lose(
                LockLost(
                    f"the leader lease was not confirmed within {self._lease:g} s (this process "
                    "was frozen, or the database unreachable): another replica may lead now"
                )
            )

    def _lose(self, lost: LockLost) -> LockLost:
        with self._mutex:
            first = self._lost is None
            if first:
                self._lost = lost
            lost = self._lost or lost
        if first and self._on_lost is not None:
            self._on_lost(lost)
        return lost

    def _beat(self, stop: threading.Event) -> None:
        interval = self._lease / HEARTBEATS_PER_LEASE
        while not stop.wait(interval):
            try:
                self.verify()
            except LockLost:
                return


def _close_quietly(stack: ExitStack) -> None:
    """Leave the lock's context: unlock and close the session, or find it gone already."""
    with contextlib.suppress(psycopg.Error, StateError):
        stack.close()
