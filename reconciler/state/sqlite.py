"""The state store in one SQLite file, with an flock writer lock beside it.

Layout: `<path>` (WAL mode, so `state list` can read while an apply writes), its `-wal`/`-shm`
companions and `<path>.lock`, all mode 0600 because the records name live sessions. The schema
version is SQLite's `user_version` header field: it is transactional and readable before any
table exists, so a migration and the version it reaches commit together.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import threading
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reconciler.core.model import (
    JournalEntry,
    JournalOp,
    RecordHead,
    SessionRecord,
    StateMeta,
    Status,
)
from reconciler.core.settled import SettledFile, settled_columns, settled_from_columns
from reconciler.errors import LockHolder, StateError, StateMissing
from reconciler.state.base import RecordChange, rename_refusal
from reconciler.state.filelock import FileLock, FileLockHandle, open_private
from reconciler.state.rows import (
    ended_in,
    json_column,
    observation_of,
    observation_text,
    status_of,
)

# "RCNL": marks the file as ours, so a foreign SQLite database is refused rather than migrated.
APPLICATION_ID = 0x52434E4C
JOURNAL_RETENTION = 10_000
BUSY_TIMEOUT_MS = 10_000

# Ordered migrations: entry N-1 takes the schema from version N-1 to N. Statements, not one
# script, because sqlite3's executescript() commits first and would split the transaction.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        f"PRAGMA application_id = {APPLICATION_ID}",
        """CREATE TABLE meta (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            lineage TEXT NOT NULL,
            serial INTEGER NOT NULL,
            fingerprint_key BLOB NOT NULL,
            created_at TEXT NOT NULL
        )""",
        """CREATE TABLE sessions (
            name TEXT PRIMARY KEY,
            provider TEXT NOT NULL,
            identity TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            spec_json TEXT NOT NULL,
            status TEXT NOT NULL,
            provider_ids TEXT NOT NULL,
            announcements_delivered TEXT NOT NULL,
            protect INTEGER NOT NULL,
            labels TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            last_error TEXT
        )""",
        # AUTOINCREMENT: ids handed out by begin_intent are never reused, even after pruning.
        """CREATE TABLE journal (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT NOT NULL,
            op TEXT NOT NULL,
            provider TEXT NOT NULL,
            identity TEXT NOT NULL,
            payload_json TEXT NOT NULL,
            started_at TEXT NOT NULL,
            outcome TEXT,
            finished_at TEXT
        )""",
        # Partial indexes keep pending_intents() and pruning cheap however long the audit grows.
        "CREATE INDEX journal_pending ON journal (id) WHERE outcome IS NULL",
        "CREATE INDEX journal_finished ON journal (id) WHERE outcome IS NOT NULL",
    ),
    # 2: the manifest file each session was applied from (NULL for older records).
    ("ALTER TABLE sessions ADD COLUMN source TEXT",),
    # 3: the attempt of the Start that made each record, and what the cloud last said of it
    # (JSON, see rows.py); NULL for older records and providers that cannot observe.
    (
        "ALTER TABLE sessions ADD COLUMN attempt TEXT",
        "ALTER TABLE sessions ADD COLUMN observation TEXT",
    ),
    # 4: the manifest files the last apply left settled (see core/settled.py); a cache of
    # verdicts, never the only copy of anything: emptying it only makes a plan read more.
    (
        """CREATE TABLE settled_files (
            source TEXT PRIMARY KEY,
            digest TEXT NOT NULL,
            context TEXT NOT NULL,
            serial INTEGER NOT NULL,
            sessions TEXT NOT NULL,
            secret_references TEXT NOT NULL
        )""",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)

_RECORD_COLUMNS = (
    "name, provider, identity, fingerprint, spec_json, status, provider_ids,"
    " announcements_delivered, protect, labels, created_at, updated_at, last_error, source,"
    " attempt, observation"
)
_SETTLED_COLUMNS = "source, digest, context, serial, sessions, secret_references"
_JOURNAL_COLUMNS = (
    "id, name, op, provider, identity, payload_json, started_at, outcome, finished_at"
)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class SqliteStateStore:
    """A StateStore in a local SQLite file; safe to share between threads of one process."""

    def __init__(
        self,
        path: str | Path,
        *,
        journal_retention: int = JOURNAL_RETENTION,
        clock: Callable[[], datetime] = _utc_now,
        create: bool = True,
    ) -> None:
        # Absolute, so the lock file and error messages stay right if the process changes
        # directory (the daemon may); not resolved, so a symlinked state dir stays as named.
        self.path = Path(path).absolute()
        self.location = str(self.path)
        self.lock_path = Path(f"{self.path}.lock")
        self._retention = journal_retention
        self._clock = clock
        self._file_lock = FileLock(self.lock_path, self._now)
        # One connection serialised by a mutex: apply may finish intents from worker threads,
        # and SQLite allows one writer at a time anyway.
        self._mutex = threading.RLock()
        self._conn: sqlite3.Connection | None = self._open(create)

    # -- opening and migrating ------------------------------------------------------------

    def _open(self, create: bool) -> sqlite3.Connection:
        if create:
            try:
                self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                # SQLite gives the -wal and -shm files the database file's mode, so creating
                # the database 0600 before SQLite sees it keeps all three private.
                os.close(open_private(self.path, os.O_RDWR))
            except OSError as exc:
                raise StateError(f"cannot create state at {self.path}: {exc}") from exc
        elif not self.path.exists():
            # Checked before SQLite sees the path: connecting would create the file, and
            # opening it would create its -wal and -shm companions.
            raise StateMissing(str(self.path))
        try:
            conn = sqlite3.connect(
                # mode=rw never creates the file, should it vanish after the check above.
                f"file:{urllib.parse.quote(str(self.path))}?mode=rw",
                uri=True,
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,  # autocommit; transactions are explicit BEGIN IMMEDIATE
                check_same_thread=False,  # guarded by self._mutex
            )
        except sqlite3.Error as exc:
            if not create and not self.path.exists():
                raise StateMissing(str(self.path)) from None
            raise StateError(f"cannot open state at {self.path}: {exc}") from exc
        try:
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            # The first statement that reads the header: a non-database file fails here.
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            self._migrate(conn)
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StateError(
                f"state at {self.path} is not a usable SQLite database: {exc}"
            ) from exc
        except BaseException:
            conn.close()
            raise
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        # Fast path without a write transaction: opening an up-to-date state (the common case)
        # must not wait for, or block, a writer.
        if self._check_version(conn) == SCHEMA_VERSION and _has_meta(conn):
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Re-read under the write lock: another process may have migrated meanwhile.
            version = self._check_version(conn)
            for statements in MIGRATIONS[version:]:
                for statement in statements:
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            if not _has_meta(conn):
                conn.execute(
                    "INSERT INTO meta (id, lineage, serial, fingerprint_key, created_at)"
                    " VALUES (1, ?, 0, ?, ?)",
                    (uuid.uuid4().hex, secrets.token_bytes(32), _iso(self._clock())),
                )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _check_version(self, conn: sqlite3.Connection) -> int:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        app_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
        foreign = app_id not in (0, APPLICATION_ID) or (
            version == 0
            and conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table'").fetchone()
        )
        if foreign:
            raise StateError(f"{self.path} is a SQLite database but not a reconciler state")
        if version > SCHEMA_VERSION:
            raise StateError(
                f"state at {self.path} has schema version {version}; this reconciler knows up"
                f" to {SCHEMA_VERSION}: upgrade reconciler"
            )
        return version

    # -- transactions ---------------------------------------------------------------------

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._mutex:
            if self._conn is None:
                raise StateError(f"state at {self.path} is closed")
            try:
                yield self._conn
            except sqlite3.Error as exc:
                raise StateError(f"state at {self.path}: {exc}") from exc

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One BEGIN IMMEDIATE transaction: taking the write lock up front means a busy
        database is waited for at BEGIN rather than failing half-way through."""
        with self._read() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    # -- meta and records -----------------------------------------------------------------

    def meta(self) -> StateMeta:
        with self._read() as conn:
            row = conn.execute("SELECT lineage, serial, fingerprint_key FROM meta").fetchone()
        if row is None:
            raise StateError(f"state at {self.path} has no meta row")
        return StateMeta(str(row[0]), int(row[1]), bytes(row[2]))

    def list_records(self) -> list[SessionRecord]:
        with self._read() as conn:
            rows = conn.execute(f"SELECT {_RECORD_COLUMNS} FROM sessions ORDER BY name").fetchall()
        # Sessions share label sets (a team, a region): each distinct text is parsed once, and
        # its records share the (never mutated) mapping.
        labels: dict[str, dict[str, str]] = {}
        return [self._record(row, labels) for row in rows]

    def record_heads(self) -> list[RecordHead]:
        with self._read() as conn:
            rows = conn.execute(
                "SELECT name, provider, identity, observation FROM sessions ORDER BY name"
            ).fetchall()
        try:
            return [RecordHead(row[0], row[1], row[2], ended_in(row[3])) for row in rows]
        except (ValueError, TypeError, KeyError) as exc:
            raise StateError(f"state at {self.path}: a record is corrupt: {exc}") from exc

    def get_record(self, name: str) -> SessionRecord | None:
        with self._read() as conn:
            row = conn.execute(
                f"SELECT {_RECORD_COLUMNS} FROM sessions WHERE name = ?", (name,)
            ).fetchone()
        return None if row is None else self._record(row)

    def put_record(self, record: SessionRecord) -> None:
        with self._write() as conn:
            _upsert(conn, record)
            _bump(conn)

    def delete_record(self, name: str) -> bool:
        with self._write() as conn:
            deleted = conn.execute("DELETE FROM sessions WHERE name = ?", (name,)).rowcount > 0
            if deleted:
                _bump(conn)
        return deleted

    def rename_record(self, old: str, new: str) -> None:
        with self._write() as conn:
            found = conn.execute("SELECT identity FROM sessions WHERE name = ?", (old,)).fetchone()
            taken = conn.execute("SELECT 1 FROM sessions WHERE name = ?", (new,)).fetchone()
            pending = conn.execute(
                "SELECT name FROM journal WHERE outcome IS NULL"
                " AND (name = ? OR name = ? OR identity = ?) ORDER BY id LIMIT 1",
                (old, new, found[0] if found else None),
            ).fetchone()
            refusal = rename_refusal(
                old, new, found is not None, taken is not None, pending[0] if pending else None
            )
            if refusal is not None:
                raise StateError(refusal)
            conn.execute("UPDATE sessions SET name = ? WHERE name = ?", (new, old))
            _bump(conn)

    # -- settled files --------------------------------------------------------------------

    def settled_files(self) -> list[SettledFile]:
        with self._read() as conn:
            rows = conn.execute(f"SELECT {_SETTLED_COLUMNS} FROM settled_files").fetchall()
        return [settled_from_columns(*row) for row in rows]

    def record_settled(self, files: Sequence[SettledFile], serial: int) -> bool:
        with self._write() as conn:
            current = int(conn.execute("SELECT serial FROM meta").fetchone()[0])
            if current != serial:
                return False
            conn.execute("DELETE FROM settled_files WHERE serial != ?", (serial,))
            conn.executemany(
                f"INSERT OR REPLACE INTO settled_files ({_SETTLED_COLUMNS})"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [settled_columns(file) for file in files],
            )
        return True

    # -- journal --------------------------------------------------------------------------

    def begin_intent(
        self, name: str, op: JournalOp, provider: str, identity: str, payload_json: str
    ) -> int:
        with self._write() as conn:
            cursor = conn.execute(
                "INSERT INTO journal (name, op, provider, identity, payload_json, started_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (name, JournalOp(op).value, provider, identity, payload_json, self._now()),
            )
            entry_id = cursor.lastrowid
        if entry_id is None:  # pragma: no cover - an INSERT always sets it
            raise StateError(f"state at {self.path}: journal insert returned no id")
        return entry_id

    def finish_intent(self, entry_id: int, outcome: str, change: RecordChange | None) -> None:
        with self._write() as conn:
            updated = conn.execute(
                "UPDATE journal SET outcome = ?, finished_at = ? WHERE id = ? AND outcome IS NULL",
                (outcome, self._now(), entry_id),
            ).rowcount
            if updated == 0:
                # Raising rolls the change back too: a record must never move without the
                # intent that explains it.
                known = conn.execute("SELECT 1 FROM journal WHERE id = ?", (entry_id,)).fetchone()
                state = "is already finished" if known else "does not exist"
                raise StateError(f"journal entry {entry_id} in {self.path} {state}")
            changed = False
            if change is not None and change.delete is not None:
                deleted = conn.execute("DELETE FROM sessions WHERE name = ?", (change.delete,))
                changed = deleted.rowcount > 0
            if change is not None and change.put is not None:
                _upsert(conn, change.put)
                changed = True
            if changed:
                _bump(conn)
            self._prune(conn)

    def _prune(self, conn: sqlite3.Connection) -> None:
        # Pending intents are never pruned: they are needed to recover after a crash.
        boundary = conn.execute(
            "SELECT id FROM journal WHERE outcome IS NOT NULL ORDER BY id DESC LIMIT 1 OFFSET ?",
            (self._retention,),
        ).fetchone()
        if boundary is not None:
            conn.execute(
                "DELETE FROM journal WHERE outcome IS NOT NULL AND id <= ?", (boundary[0],)
            )

    def pending_intents(self) -> list[JournalEntry]:
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {_JOURNAL_COLUMNS} FROM journal WHERE outcome IS NULL ORDER BY id"
            ).fetchall()
        return [self._entry(row) for row in rows]

    def recent_journal(self, limit: int) -> list[JournalEntry]:
        if limit <= 0:  # SQLite reads a negative LIMIT as "no limit"
            return []
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {_JOURNAL_COLUMNS} FROM journal ORDER BY id DESC LIMIT ?", (limit,)
            ).fetchall()
        return [self._entry(row) for row in rows]

    # -- the writer lock ------------------------------------------------------------------

    def lock(self, command: str) -> AbstractContextManager[FileLockHandle]:
        """flock on `<path>.lock` (see filelock.py): the kernel drops it when the holder dies,
        so a crashed apply never leaves a stale lock."""
        return self._file_lock.hold(command)

    def lock_holder(self) -> LockHolder | None:
        return self._file_lock.holder()

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        with self._mutex:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> SqliteStateStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- row conversion -------------------------------------------------------------------

    def _now(self) -> str:
        return _iso(self._clock())

    def _record(
        self, row: sqlite3.Row, labels_by_text: dict[str, dict[str, str]] | None = None
    ) -> SessionRecord:
        try:
            labels_text = row["labels"]
            labels = labels_by_text.get(labels_text) if labels_by_text is not None else None
            if labels is None:
                labels = _string_map(json_column(labels_text))
                if labels_by_text is not None:
                    labels_by_text[labels_text] = labels
            return SessionRecord(
                name=row["name"],
                provider=row["provider"],
                identity=row["identity"],
                fingerprint=row["fingerprint"],
                spec_json=row["spec_json"],
                status=status_of(row["status"]),
                provider_ids=_string_map(json_column(row["provider_ids"])),
                announcements_delivered=tuple(
                    str(item) for item in json_column(row["announcements_delivered"])
                ),
                protect=bool(row["protect"]),
                labels=labels,
                created_at=row["created_at"],
                updated_at=row["updated_at"],
                last_error=row["last_error"],
                source=row["source"],
                attempt=row["attempt"],
                observation=observation_of(row["observation"]),
            )
        except (ValueError, TypeError) as exc:
            name = row["name"]
            raise StateError(f"state at {self.path}: record {name!r} is corrupt: {exc}") from exc

    def _entry(self, row: sqlite3.Row) -> JournalEntry:
        try:
            op = JournalOp(row["op"])
        except ValueError as exc:
            raise StateError(f"state at {self.path}: journal entry {row['id']}: {exc}") from exc
        return JournalEntry(
            id=row["id"],
            name=row["name"],
            op=op,
            provider=row["provider"],
            identity=row["identity"],
            payload_json=row["payload_json"],
            started_at=row["started_at"],
            outcome=row["outcome"],
            finished_at=row["finished_at"],
        )


def _upsert(conn: sqlite3.Connection, record: SessionRecord) -> None:
    conn.execute(
        f"INSERT OR REPLACE INTO sessions ({_RECORD_COLUMNS})"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            record.name,
            record.provider,
            record.identity,
            record.fingerprint,
            record.spec_json,
            Status(record.status).value,
            json.dumps(dict(record.provider_ids), sort_keys=True),
            json.dumps(list(record.announcements_delivered)),
            int(record.protect),
            json.dumps(dict(record.labels), sort_keys=True),
            record.created_at,
            record.updated_at,
            record.last_error,
            record.source,
            record.attempt,
            observation_text(record.observation),
        ),
    )


def _bump(conn: sqlite3.Connection) -> None:
    conn.execute("UPDATE meta SET serial = serial + 1")


def _has_meta(conn: sqlite3.Connection) -> bool:
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
    ).fetchone()
    return exists is not None and conn.execute("SELECT 1 FROM meta").fetchone() is not None


def _string_map(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise TypeError(f"expected a JSON object, got {type(value).__name__}")
    return {str(key): str(item) for key, item in value.items()}
