"""The state store in a PostgreSQL schema, with a session advisory lock as the writer lock.

The schema (the `schema` argument, else the one the URL names: pg_url) holds the tables that
pg_schema creates and migrates when the store opens.

The writer lock is a session-level advisory lock on a connection of its own, held for the lock's
lifetime: when the holder dies its connection dies and the server frees the lock. A holder whose
connection survives it (a hung process, a half-open TCP connection) is removed with
`force_unlock()`, which terminates the backend holding the lock (`reconciler state unlock`);
that holder, should it wake up, finds its lock gone at its next check (pg_lock.PgLockHandle).

Advisory lock keys are 64-bit, derived from the schema name (advisory locks are already scoped to
one database), so states in different schemas of one database never contend:
    writer lock    blake2b("reconciler writer lock\\0" + schema, 8 bytes) as a signed int64
    migrations     blake2b("reconciler migration\\0" + schema, 8 bytes) as a signed int64

The URL's password never appears in an error message: stores name themselves by `location`
(`postgresql://user@host:port/db (schema s)`), and driver messages are scrubbed of it.

SCHEMA_VERSION, DEFAULT_SCHEMA, schema_from_url and schema_from_options are re-exported here,
where callers have always imported them from.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, LiteralString

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Jsonb

from reconciler.core.model import (
    JournalEntry,
    JournalOp,
    RecordHead,
    SessionRecord,
    StateMeta,
    Status,
)
from reconciler.core.settled import SettledFile, settled_columns, settled_from_columns
from reconciler.errors import LockHeld, LockHolder, StateError, StateMissing
from reconciler.state.base import RecordChange, rename_refusal
from reconciler.state.pg_lock import PgLockHandle
from reconciler.state.pg_schema import SCHEMA_VERSION, TABLES, migrate
from reconciler.state.pg_url import (
    DEFAULT_SCHEMA,
    display_url,
    password_spellings,
    redact,
    schema_from_options,
    schema_from_url,
    spellings_of,
)
from reconciler.state.rows import ended_in, observation_of, observation_text

__all__ = [
    "APPLICATION_NAME",
    "CONNECT_TIMEOUT_SECONDS",
    "DEFAULT_SCHEMA",
    "JOURNAL_RETENTION",
    "SCHEMA_VERSION",
    "TERMINATE_WAIT_SECONDS",
    "Displaced",
    "PostgresStateStore",
    "advisory_key",
    "schema_from_options",
    "schema_from_url",
]

JOURNAL_RETENTION = 10_000  # the same as SQLite's: the newest finished entries kept
APPLICATION_NAME = "reconciler"
# libpq waits forever by default; a state store that cannot be reached should say so instead.
CONNECT_TIMEOUT_SECONDS = 10
# How long force_unlock() waits for a terminated backend to let go of the lock.
TERMINATE_WAIT_SECONDS = 10.0

# A holder that has the lock but has not registered itself yet is retried this often, this far
# apart, before it is reported from pg_stat_activity (as the SQLite store does with its file).
_UNREGISTERED_RETRIES = 20
_UNREGISTERED_RETRY_SLEEP = 0.01

_RECORD_COLUMNS: LiteralString = (
    "name, provider, identity, fingerprint, spec_json, status, provider_ids,"
    " announcements_delivered, protect, labels, created_at, updated_at, last_error, source,"
    " attempt, observation"
)
_JOURNAL_COLUMNS: LiteralString = (
    "id, name, op, provider, identity, payload_json, started_at, outcome, finished_at"
)

_UPSERT_RECORD: LiteralString = (
    "INSERT INTO {sessions} (" + _RECORD_COLUMNS + ")"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
    " ON CONFLICT (name) DO UPDATE SET provider = EXCLUDED.provider,"
    " identity = EXCLUDED.identity, fingerprint = EXCLUDED.fingerprint,"
    " spec_json = EXCLUDED.spec_json, status = EXCLUDED.status,"
    " provider_ids = EXCLUDED.provider_ids,"
    " announcements_delivered = EXCLUDED.announcements_delivered,"
    " protect = EXCLUDED.protect, labels = EXCLUDED.labels,"
    " created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at,"
    " last_error = EXCLUDED.last_error, source = EXCLUDED.source,"
    " attempt = EXCLUDED.attempt, observation = EXCLUDED.observation"
)

# The backend holding the writer lock, the holder row if that backend wrote it, and what
# pg_stat_activity says about the backend. A bigint advisory key shows in pg_locks as its high
# and low 32 bits in classid and objid, with objsubid 1.
_PROBE_LOCK: LiteralString = """
    SELECT l.pid AS backend_pid,
           h.pid AS holder_pid, h.host AS holder_host, h.command AS holder_command,
           h.since AS holder_since,
           a.pid AS activity_pid, a.application_name, host(a.client_addr) AS client_addr,
           a.client_hostname, a.client_port, a.backend_start
    FROM pg_catalog.pg_locks AS l
    LEFT JOIN {lock_holder} AS h ON h.backend_pid = l.pid
    LEFT JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid
    WHERE l.locktype = 'advisory' AND l.granted
      AND l.database = (SELECT oid FROM pg_catalog.pg_database
                        WHERE datname = pg_catalog.current_database())
      AND l.classid = %s::oid AND l.objid = %s::oid AND l.objsubid = 1
    LIMIT 1
"""


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def advisory_key(purpose: str, schema: str) -> int:
    """A stable signed 64-bit advisory lock key for `purpose` in `schema`."""
    digest = hashlib.blake2b(f"reconciler {purpose}\0{schema}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@dataclass(frozen=True, slots=True)
class _Probe:
    """What is known about the backend holding the writer lock."""

    backend_pid: int
    holder: LockHolder | None
    registered: bool  # the holder came from its own lock_holder row, not pg_stat_activity


@dataclass(frozen=True, slots=True)
class Displaced:
    """The holder `force_unlock()` took the writer lock from."""

    backend_pid: int
    holder: LockHolder | None

    def describe(self) -> str:
        """What force_unlock() did, naming whom it displaced."""
        if self.holder is None:
            return (
                f"terminated PostgreSQL backend {self.backend_pid}, which held the lock (its "
                "client is not visible to this role)"
            )
        holder = self.holder
        return (
            f"terminated the backend of pid {holder.pid} on {holder.host} ({holder.command}),"
            f" holding since {holder.since}"
        )


class PostgresStateStore:
    """A StateStore in a PostgreSQL schema; safe to share between threads of one process."""

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        journal_retention: int = JOURNAL_RETENTION,
        clock: Callable[[], datetime] = _utc_now,
        create: bool = True,
    ) -> None:
        self._secrets = password_spellings(url)
        try:
            params = conninfo_to_dict(url)
        except psycopg.Error as exc:
            # `from None`: libpq quotes the offending part of the URL, which may hold the
            # password, and a chained cause would print it in a traceback.
            raise StateError(
                f"the PostgreSQL state URL is not valid: {self._redact(exc)}"
            ) from None
        spellings = {*self._secrets, *spellings_of(str(params.get("password") or ""))}
        self._secrets = sorted(spellings, key=len, reverse=True)
        self._conninfo = url
        self._connect_args: dict[str, Any] = {}
        if "connect_timeout" not in params:
            self._connect_args["connect_timeout"] = CONNECT_TIMEOUT_SECONDS
        self._application_name = str(params.get("application_name") or APPLICATION_NAME)
        self.schema = schema if schema is not None else schema_from_options(params)
        self.location = f"{display_url(params)} (schema {self.schema})"
        self.lock_key = advisory_key("writer lock", self.schema)
        self._migration_key = advisory_key("migration", self.schema)
        self._retention = journal_retention
        self._clock = clock
        self._names = {name: sql.Identifier(self.schema, name) for name in TABLES}
        self._names["schema"] = sql.Identifier(self.schema)
        self._statements: dict[str, sql.Composed] = {}
        # One connection serialised by a mutex for records and journal, as in the SQLite
        # store: apply may finish intents from worker threads. Lock connections are separate.
        self._mutex = threading.RLock()
        self._closed = False
        self._conn: psycopg.Connection[DictRow] | None = None
        self._lock_conns: set[psycopg.Connection[DictRow]] = set()
        # The lock this store holds, if any: its session carries every write meanwhile.
        self._fence: PgLockHandle | None = None
        self._lock_conns_mutex = threading.Lock()
        try:
            with self._session() as conn:
                if not create and not _has_schema_version(conn, self.schema):
                    # Nothing created: not the schema, not a table (migrate would do both).
                    raise StateMissing(self.location)
                migrate(
                    conn,
                    schema=self.schema,
                    location=self.location,
                    render=self._sql,
                    migration_key=self._migration_key,
                    now=self._now,
                )
        except BaseException:
            self.close()
            raise

    # -- connections and transactions ----------------------------------------------------

    def _sql(self, template: LiteralString) -> sql.Composed:
        statement = self._statements.get(template)
        if statement is None:
            statement = sql.SQL(template).format(**self._names)
            self._statements[template] = statement
        return statement

    def _connect(self, application_name: str) -> psycopg.Connection[DictRow]:
        try:
            return psycopg.connect(
                self._conninfo,
                autocommit=True,  # transactions are explicit: conn.transaction()
                row_factory=dict_row,
                application_name=application_name,
                **self._connect_args,
            )
        except psycopg.Error as exc:
            # `from None` for the same reason as a URL that does not parse.
            raise StateError(
                f"cannot connect to the PostgreSQL state at {self.location}: {self._redact(exc)}"
            ) from None

    @contextmanager
    def _session(self) -> Iterator[psycopg.Connection[DictRow]]:
        with self._mutex:
            if self._closed:
                raise StateError(f"state at {self.location} is closed")
            if self._conn is None or self._conn.broken or self._conn.closed:
                # A server restart or a dropped connection fails the call that met it; the
                # next call reconnects instead of failing for the rest of a daemon's life.
                if self._conn is not None:
                    self._conn.close()
                self._conn = self._connect(self._application_name)
            try:
                yield self._conn
            except psycopg.Error as exc:
                raise StateError(f"state at {self.location}: {self._redact(exc)}") from exc

    @contextmanager
    def _write(self) -> Iterator[psycopg.Connection[DictRow]]:
        """One transaction; any exception, ours included, rolls all of it back.

        While this store holds the writer lock, writes go through the lock's own session: if
        `state unlock` terminates it, a write already under way cannot commit either, so a
        holder that lost the lock never writes beside the new one (LockLost)."""
        fence = self._fence
        if fence is None:
            with self._session() as conn, conn.transaction():
                yield conn
            return
        with self._mutex:
            try:
                with fence.conn.transaction():
                    yield fence.conn
            except psycopg.Error as exc:
                if fence.conn.broken or fence.conn.closed:
                    raise fence.lost() from None
                raise StateError(f"state at {self.location}: {self._redact(exc)}") from exc

    def _redact(self, error: BaseException | str) -> str:
        return redact(error, self._secrets)

    # -- meta and records ----------------------------------------------------------------

    def meta(self) -> StateMeta:
        with self._session() as conn:
            row = conn.execute(
                self._sql("SELECT lineage, serial, fingerprint_key FROM {meta}")
            ).fetchone()
        if row is None:
            raise StateError(f"state at {self.location} has no meta row")
        return StateMeta(str(row["lineage"]), int(row["serial"]), bytes(row["fingerprint_key"]))

    def list_records(self) -> list[SessionRecord]:
        with self._session() as conn:
            rows = conn.execute(
                self._sql("SELECT " + _RECORD_COLUMNS + " FROM {sessions} ORDER BY name")
            ).fetchall()
        return [self._record(row) for row in rows]

    def record_heads(self) -> list[RecordHead]:
        with self._session() as conn:
            rows = conn.execute(
                self._sql(
                    "SELECT name, provider, identity, observation FROM {sessions} ORDER BY name"
                )
            ).fetchall()
        try:
            return [
                RecordHead(
                    row["name"], row["provider"], row["identity"], ended_in(row["observation"])
                )
                for row in rows
            ]
        except (ValueError, TypeError, KeyError) as exc:
            raise StateError(f"state at {self.location}: a record is corrupt: {exc}") from exc

    def get_record(self, name: str) -> SessionRecord | None:
        with self._session() as conn:
            row = conn.execute(
                self._sql("SELECT " + _RECORD_COLUMNS + " FROM {sessions} WHERE name = %s"),
                (name,),
            ).fetchone()
        return None if row is None else self._record(row)

    def put_record(self, record: SessionRecord) -> None:
        with self._write() as conn:
            self._upsert(conn, record)
            self._bump(conn)

    def delete_record(self, name: str) -> bool:
        with self._write() as conn:
            deleted = self._delete(conn, name)
            if deleted:
                self._bump(conn)
        return deleted

    def rename_record(self, old: str, new: str) -> None:
        with self._write() as conn:
            # FOR UPDATE: a concurrent rename or put of either name waits for this one.
            found = conn.execute(
                self._sql("SELECT identity FROM {sessions} WHERE name = %s FOR UPDATE"), (old,)
            ).fetchone()
            taken = conn.execute(
                self._sql("SELECT 1 FROM {sessions} WHERE name = %s FOR UPDATE"), (new,)
            ).fetchone()
            pending = conn.execute(
                self._sql(
                    "SELECT name FROM {journal} WHERE outcome IS NULL"
                    " AND (name = %s OR name = %s OR identity = %s) ORDER BY id LIMIT 1"
                ),
                (old, new, found["identity"] if found else None),
            ).fetchone()
            refusal = rename_refusal(
                old, new, found is not None, taken is not None, pending["name"] if pending else None
            )
            if refusal is not None:
                raise StateError(refusal)
            conn.execute(self._sql("UPDATE {sessions} SET name = %s WHERE name = %s"), (new, old))
            self._bump(conn)

    def _upsert(self, conn: psycopg.Connection[DictRow], record: SessionRecord) -> None:
        conn.execute(
            self._sql(_UPSERT_RECORD),
            (
                record.name,
                record.provider,
                record.identity,
                record.fingerprint,
                record.spec_json,
                Status(record.status).value,
                Jsonb(dict(record.provider_ids)),
                Jsonb(list(record.announcements_delivered)),
                record.protect,
                Jsonb(dict(record.labels)),
                record.created_at,
                record.updated_at,
                record.last_error,
                record.source,
                record.attempt,
                observation_text(record.observation),
            ),
        )

    def _delete(self, conn: psycopg.Connection[DictRow], name: str) -> bool:
        cursor = conn.execute(self._sql("DELETE FROM {sessions} WHERE name = %s"), (name,))
        return cursor.rowcount > 0

    def _bump(self, conn: psycopg.Connection[DictRow]) -> None:
        # In SQL, not read-modify-write: the row lock makes two processes' bumps add up.
        conn.execute(self._sql("UPDATE {meta} SET serial = serial + 1"))

    # -- settled files -------------------------------------------------------------------

    def settled_files(self) -> list[SettledFile]:
        with self._session() as conn:
            rows = conn.execute(
                self._sql(
                    "SELECT source, digest, context, serial, sessions, secret_references"
                    " FROM {settled_files}"
                )
            ).fetchall()
        return [
            settled_from_columns(
                str(row["source"]),
                str(row["digest"]),
                str(row["context"]),
                int(row["serial"]),
                str(row["sessions"]),
                str(row["secret_references"]),
            )
            for row in rows
        ]

    def record_settled(self, files: Sequence[SettledFile], serial: int) -> bool:
        with self._write() as conn:
            # FOR UPDATE: a record change (which bumps the serial) waits until this commits.
            row = conn.execute(self._sql("SELECT serial FROM {meta} FOR UPDATE")).fetchone()
            if row is None or int(row["serial"]) != serial:
                return False
            conn.execute(self._sql("DELETE FROM {settled_files} WHERE serial <> %s"), (serial,))
            with conn.cursor() as cursor:
                cursor.executemany(
                    self._sql(
                        "INSERT INTO {settled_files}"
                        " (source, digest, context, serial, sessions, secret_references)"
                        " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (source) DO UPDATE SET"
                        " digest = EXCLUDED.digest, context = EXCLUDED.context,"
                        " serial = EXCLUDED.serial, sessions = EXCLUDED.sessions,"
                        " secret_references = EXCLUDED.secret_references"
                    ),
                    [settled_columns(file) for file in files],
                )
        return True

    # -- journal -------------------------------------------------------------------------

    def begin_intent(
        self, name: str, op: JournalOp, provider: str, identity: str, payload_json: str
    ) -> int:
        with self._write() as conn:
            row = conn.execute(
                self._sql(
                    "INSERT INTO {journal} (name, op, provider, identity, payload_json,"
                    " started_at) VALUES (%s, %s, %s, %s, %s, %s) RETURNING id"
                ),
                (name, JournalOp(op).value, provider, identity, payload_json, self._now()),
            ).fetchone()
        if row is None:  # pragma: no cover - INSERT ... RETURNING always returns the row
            raise StateError(f"state at {self.location}: journal insert returned no id")
        return int(row["id"])

    def finish_intent(self, entry_id: int, outcome: str, change: RecordChange | None) -> None:
        with self._write() as conn:
            updated = conn.execute(
                self._sql(
                    "UPDATE {journal} SET outcome = %s, finished_at = %s"
                    " WHERE id = %s AND outcome IS NULL"
                ),
                (outcome, self._now(), entry_id),
            ).rowcount
            if updated == 0:
                # Raising rolls the change back too: a record must never move without the
                # intent that explains it.
                known = conn.execute(
                    self._sql("SELECT 1 FROM {journal} WHERE id = %s"), (entry_id,)
                ).fetchone()
                state = "is already finished" if known else "does not exist"
                raise StateError(f"journal entry {entry_id} in {self.location} {state}")
            changed = False
            if change is not None and change.delete is not None:
                changed = self._delete(conn, change.delete)
            if change is not None and change.put is not None:
                self._upsert(conn, change.put)
                changed = True
            if changed:
                self._bump(conn)
            self._prune(conn)

    def _prune(self, conn: psycopg.Connection[DictRow]) -> None:
        # Pending intents are never pruned: they are needed to recover after a crash.
        conn.execute(
            self._sql(
                "DELETE FROM {journal} WHERE outcome IS NOT NULL AND id <= ("
                " SELECT id FROM {journal} WHERE outcome IS NOT NULL"
                " ORDER BY id DESC LIMIT 1 OFFSET %s)"
            ),
            (self._retention,),
        )

    def pending_intents(self) -> list[JournalEntry]:
        with self._session() as conn:
            rows = conn.execute(
                self._sql(
                    "SELECT " + _JOURNAL_COLUMNS + " FROM {journal} WHERE outcome IS NULL"
                    " ORDER BY id"
                )
            ).fetchall()
        return [self._entry(row) for row in rows]

    def recent_journal(self, limit: int) -> list[JournalEntry]:
        if limit <= 0:  # PostgreSQL refuses a negative LIMIT; SQLite reads it as "all"
            return []
        with self._session() as conn:
            rows = conn.execute(
                self._sql(
                    "SELECT " + _JOURNAL_COLUMNS + " FROM {journal} ORDER BY id DESC LIMIT %s"
                ),
                (limit,),
            ).fetchall()
        return [self._entry(row) for row in rows]

    # -- the writer lock -----------------------------------------------------------------

    @contextmanager
    def lock(self, command: str) -> Iterator[PgLockHandle]:
        """A session advisory lock on a connection of its own, named `reconciler: <command>`
        in pg_stat_activity. A new connection per call: advisory locks are re-entrant within
        one session, so a second lock() of this very store is refused like any other."""
        if self._closed:
            raise StateError(f"state at {self.location} is closed")
        conn = self._connect(f"{APPLICATION_NAME}: {command}")
        with self._lock_conns_mutex:
            self._lock_conns.add(conn)
        try:
            self._acquire(conn, command)
            handle = PgLockHandle(conn, self.lock_key, self.location, self._mutex)
            self._fence = handle
            try:
                yield handle
            finally:
                self._fence = None
                handle.released = True
                self._release(conn)
        finally:
            with self._lock_conns_mutex:
                self._lock_conns.discard(conn)
            conn.close()

    def _acquire(self, conn: psycopg.Connection[DictRow], command: str) -> None:
        # A new holder has the lock a moment before it has registered its name: an
        # unregistered holder gets a few short retries before it is reported from
        # pg_stat_activity, a registered one is reported at once.
        probe: _Probe | None = None
        try:
            for _ in range(_UNREGISTERED_RETRIES):
                row = conn.execute(
                    "SELECT pg_catalog.pg_try_advisory_lock(%s) AS acquired", (self.lock_key,)
                ).fetchone()
                if row is not None and row["acquired"]:
                    self._register(conn, command)
                    return
                probe = self._probe(conn)
                if probe is not None and probe.registered:
                    raise LockHeld(probe.holder)
                time.sleep(_UNREGISTERED_RETRY_SLEEP)
        except psycopg.Error as exc:
            raise StateError(f"state at {self.location}: {self._redact(exc)}") from exc
        raise LockHeld(None if probe is None else probe.holder)

    def _register(self, conn: psycopg.Connection[DictRow], command: str) -> None:
        conn.execute(
            self._sql(
                "INSERT INTO {lock_holder} (id, backend_pid, pid, host, command, since)"
                " VALUES (1, pg_catalog.pg_backend_pid(), %s, %s, %s, %s)"
                " ON CONFLICT (id) DO UPDATE SET backend_pid = EXCLUDED.backend_pid,"
                " pid = EXCLUDED.pid, host = EXCLUDED.host, command = EXCLUDED.command,"
                " since = EXCLUDED.since"
            ),
            (os.getpid(), socket.gethostname(), command, self._now()),
        )

    def _release(self, conn: psycopg.Connection[DictRow]) -> None:
        # Unlocked explicitly rather than by closing: the server ends a closed session a
        # moment later, and the next lock() right after ours must find the lock free. If the
        # session is already gone (force_unlock terminated it), so is the lock; closing the
        # connection, the caller's next step, ends the session in any case, so an error here
        # must not hide the exception that ended the block.
        with contextlib.suppress(psycopg.Error):
            conn.execute(
                self._sql(
                    "DELETE FROM {lock_holder} WHERE backend_pid = pg_catalog.pg_backend_pid()"
                )
            )
            conn.execute("SELECT pg_catalog.pg_advisory_unlock(%s)", (self.lock_key,))

    def lock_holder(self) -> LockHolder | None:
        """The registered holder while its backend holds the lock; otherwise the backend that
        does, from pg_stat_activity (pid is then the server's backend pid and host the client
        address the server sees); None when nobody holds it or the backend is not visible."""
        with self._session() as conn:
            probe = self._probe(conn)
        return None if probe is None else probe.holder

    def force_unlock(self) -> Displaced | None:
        """Terminate the backend holding the writer lock, which frees it, and wait until it
        has; say whom that displaced, or None when nothing held the lock. The displaced
        holder, if it is alive (hung, paused), stops at its next call or write: its lock
        handle's verify() fails once its session is gone."""
        with self._session() as conn:
            probe = self._probe(conn)
            if probe is None:
                return None
            pid = probe.backend_pid
            conn.execute("SELECT pg_catalog.pg_terminate_backend(%s)", (pid,))
            # The signal is asynchronous: wait for the backend to exit, so that the lock is
            # free when this returns.
            deadline = time.monotonic() + TERMINATE_WAIT_SECONDS
            while (still := self._probe(conn)) is not None and still.backend_pid == pid:
                if time.monotonic() >= deadline:
                    raise StateError(
                        f"state at {self.location}: PostgreSQL backend {pid} was told to"
                        " terminate but still holds the lock"
                    )
                time.sleep(0.05)
            conn.execute(self._sql("DELETE FROM {lock_holder} WHERE backend_pid = %s"), (pid,))
        return Displaced(pid, probe.holder)

    def _probe(self, conn: psycopg.Connection[DictRow]) -> _Probe | None:
        unsigned = self.lock_key & 0xFFFF_FFFF_FFFF_FFFF
        row = conn.execute(
            self._sql(_PROBE_LOCK), (unsigned >> 32, unsigned & 0xFFFF_FFFF)
        ).fetchone()
        if row is None:
            return None
        backend_pid = int(row["backend_pid"])
        if row["holder_pid"] is not None:
            holder = LockHolder(
                pid=int(row["holder_pid"]),
                host=str(row["holder_host"]),
                command=str(row["holder_command"]),
                since=str(row["holder_since"]),
            )
            return _Probe(backend_pid, holder, registered=True)
        if row["activity_pid"] is None:
            return _Probe(backend_pid, None, registered=False)
        return _Probe(backend_pid, _backend_holder(backend_pid, row), registered=False)

    # -- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        """Close every connection, the lock connections included (which frees a held lock)."""
        with self._lock_conns_mutex:
            lock_conns = list(self._lock_conns)
            self._lock_conns.clear()
        for conn in lock_conns:
            conn.close()
        with self._mutex:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> PostgresStateStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- row conversion ------------------------------------------------------------------

    def _now(self) -> str:
        return _iso(self._clock())

    def _record(self, row: DictRow) -> SessionRecord:
        try:
            return SessionRecord(
                name=row["name"],
                provider=row["provider"],
                identity=row["identity"],
                fingerprint=row["fingerprint"],
                spec_json=row["spec_json"],
                status=Status(row["status"]),
                provider_ids=_string_map(row["provider_ids"]),
                announcements_delivered=_string_tuple(row["announcements_delivered"]),
                protect=bool(row["protect"]),
                labels=_string_map(row["labels"]),
                created_at=row["created_at"],
                updated_at=row["updated_at"],
                last_error=row["last_error"],
                source=row["source"],
                attempt=row["attempt"],
                observation=observation_of(row["observation"]),
            )
        except (ValueError, TypeError) as exc:
            name = row["name"]
            raise StateError(
                f"state at {self.location}: record {name!r} is corrupt: {exc}"
            ) from exc

    def _entry(self, row: DictRow) -> JournalEntry:
        try:
            op = JournalOp(row["op"])
        except ValueError as exc:
            raise StateError(f"state at {self.location}: journal entry {row['id']}: {exc}") from exc
        return JournalEntry(
            id=int(row["id"]),
            name=row["name"],
            op=op,
            provider=row["provider"],
            identity=row["identity"],
            payload_json=row["payload_json"],
            started_at=row["started_at"],
            outcome=row["outcome"],
            finished_at=row["finished_at"],
        )


def _has_schema_version(conn: psycopg.Connection[DictRow], schema: str) -> bool:
    found = conn.execute(
        "SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = %s AND tablename = 'schema_version'",
        (schema,),
    ).fetchone()
    return found is not None


def _backend_holder(backend_pid: int, row: DictRow) -> LockHolder:
    """The holder as pg_stat_activity shows it, for a backend that did not register itself."""
    application = str(row["application_name"] or "")
    prefix = f"{APPLICATION_NAME}: "
    command = application.removeprefix(prefix) if application else "unknown command"
    if row["client_hostname"] or row["client_addr"]:
        host = str(row["client_hostname"] or row["client_addr"])
    elif row["client_port"] == -1:
        host = "the database server (local socket)"
    else:  # another role's backend: pg_stat_activity hides its address
        host = "an unknown host"
    started = row["backend_start"]
    since = _iso(started) if isinstance(started, datetime) else "an unknown time"
    return LockHolder(pid=backend_pid, host=host, command=command, since=since)


def _string_map(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise TypeError(f"expected a JSON object, got {type(value).__name__}")
    return {str(key): str(item) for key, item in value.items()}


def _string_tuple(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise TypeError(f"expected a JSON array, got {type(value).__name__}")
    return tuple(str(item) for item in value)
