"""The PostgreSQL state's tables and the migrations that create them.

One schema holds `schema_version` (one row), `meta`, `sessions`, `journal`, `lock_holder` and
`settled_files`.
Every statement names its tables with the schema, so the session's search_path never matters
and a pooler that resets it cannot send us elsewhere.

Migrations run in one transaction holding a transaction-level advisory lock: two runners opening
a new state at once take turns instead of colliding on CREATE TABLE, and the version a migration
reaches commits with it. A schema that holds our tables but no `schema_version` belongs to
something else and is refused rather than migrated.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable
from typing import LiteralString

import psycopg
from psycopg import sql
from psycopg.rows import DictRow

from reconciler.errors import StateError

# Renders a statement template: its placeholders become the schema-qualified table names.
Render = Callable[[LiteralString], sql.Composed]

# Ordered migrations: entry N-1 takes the schema from version N-1 to N. Placeholders name the
# schema-qualified tables. Text columns hold the timestamps and JSON documents exactly as the
# SQLite store keeps them, so both answer with identical strings; the string maps are jsonb so
# operators can query them.
MIGRATIONS: tuple[tuple[LiteralString, ...], ...] = (
    (
        """CREATE TABLE {meta} (
            id integer PRIMARY KEY CHECK (id = 1),
            lineage text NOT NULL,
            serial bigint NOT NULL,
            fingerprint_key bytea NOT NULL,
            created_at text NOT NULL
        )""",
        """CREATE TABLE {sessions} (
            name text PRIMARY KEY,
            provider text NOT NULL,
            identity text NOT NULL,
            fingerprint text NOT NULL,
            spec_json text NOT NULL,
            status text NOT NULL,
            provider_ids jsonb NOT NULL,
            announcements_delivered jsonb NOT NULL,
            protect boolean NOT NULL,
            labels jsonb NOT NULL,
            created_at text NOT NULL,
            updated_at text NOT NULL,
            last_error text
        )""",
        # An identity is backed by a sequence: ids handed out by begin_intent are never
        # reused, even after pruning.
        """CREATE TABLE {journal} (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            name text NOT NULL,
            op text NOT NULL,
            provider text NOT NULL,
            identity text NOT NULL,
            payload_json text NOT NULL,
            started_at text NOT NULL,
            outcome text,
            finished_at text
        )""",
        # Partial indexes keep pending_intents() and pruning cheap however long the audit grows.
        "CREATE INDEX journal_pending ON {journal} (id) WHERE outcome IS NULL",
        "CREATE INDEX journal_finished ON {journal} (id) WHERE outcome IS NOT NULL",
        # Who took the writer lock, written by the holder once it has the lock. Only trusted
        # while pg_locks shows backend_pid holding the lock: a killed holder leaves its row.
        """CREATE TABLE {lock_holder} (
            id integer PRIMARY KEY CHECK (id = 1),
            backend_pid integer NOT NULL,
            pid integer NOT NULL,
            host text NOT NULL,
            command text NOT NULL,
            since text NOT NULL
        )""",
    ),
    # 2: the manifest file each session was applied from (NULL for older records).
    ("ALTER TABLE {sessions} ADD COLUMN source text",),
    # 3: the attempt of the Start that made each record, and what the cloud last said of it
    # (JSON text, as SQLite keeps it: see rows.py).
    (
        "ALTER TABLE {sessions} ADD COLUMN attempt text",
        "ALTER TABLE {sessions} ADD COLUMN observation text",
    ),
    # 4: the manifest files the last apply left settled (see core/settled.py); a cache of
    # verdicts, never the only copy of anything: emptying it only makes a plan read more.
    (
        """CREATE TABLE {settled_files} (
            source text PRIMARY KEY,
            digest text NOT NULL,
            context text NOT NULL,
            serial bigint NOT NULL,
            sessions text NOT NULL,
            secret_references text NOT NULL
        )""",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)

# The tables every statement names, each qualified with the state's schema.
TABLES = ("meta", "sessions", "journal", "lock_holder", "schema_version", "settled_files")

# Relations a migration creates: finding one in a schema without schema_version means the
# schema belongs to something else, which is refused rather than migrated.
_OWN_RELATIONS = [
    "meta",
    "sessions",
    "journal",
    "journal_id_seq",
    "journal_pending",
    "journal_finished",
    "lock_holder",
    "settled_files",
]


def migrate(
    conn: psycopg.Connection[DictRow],
    *,
    schema: str,
    location: str,
    render: Render,
    migration_key: int,
    now: Callable[[], str],
) -> None:
    """Bring `schema` to SCHEMA_VERSION and give it its meta row, under the advisory lock
    `migration_key`; `location` names the state in errors, `now` stamps a new meta row."""
    # Fast path without the migration lock: opening an up-to-date state (the common case)
    # must not queue behind another runner's migration.
    if _version(conn, schema, location, render) == SCHEMA_VERSION and _has_meta(conn, render):
        return
    with conn.transaction():
        conn.execute("SELECT pg_catalog.pg_advisory_xact_lock(%s)", (migration_key,))
        # Re-read under the lock: another runner may have migrated meanwhile.
        version = _version(conn, schema, location, render)
        if version == 0:
            _refuse_foreign(conn, schema, location)
            exists = conn.execute(
                "SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = %s", (schema,)
            ).fetchone()
            if exists is None:
                # Only when missing: CREATE SCHEMA IF NOT EXISTS needs the CREATE privilege on
                # the database even when the schema is already there.
                conn.execute(render("CREATE SCHEMA {schema}"))
            conn.execute(
                render(
                    "CREATE TABLE IF NOT EXISTS {schema_version} ("
                    " id integer PRIMARY KEY CHECK (id = 1), version integer NOT NULL)"
                )
            )
        for statements in MIGRATIONS[version:]:
            for statement in statements:
                conn.execute(render(statement))
        conn.execute(
            render(
                "INSERT INTO {schema_version} (id, version) VALUES (1, %s)"
                " ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version"
            ),
            (SCHEMA_VERSION,),
        )
        conn.execute(
            render(
                "INSERT INTO {meta} (id, lineage, serial, fingerprint_key, created_at)"
                " VALUES (1, %s, 0, %s, %s) ON CONFLICT (id) DO NOTHING"
            ),
            (uuid.uuid4().hex, secrets.token_bytes(32), now()),
        )


def _version(conn: psycopg.Connection[DictRow], schema: str, location: str, render: Render) -> int:
    found = conn.execute(
        "SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = %s AND tablename = 'schema_version'",
        (schema,),
    ).fetchone()
    if found is None:
        return 0
    row = conn.execute(render("SELECT version FROM {schema_version}")).fetchone()
    version = 0 if row is None else int(row["version"])
    if version > SCHEMA_VERSION:
        raise StateError(
            f"state at {location} has schema version {version}; this reconciler knows"
            f" up to {SCHEMA_VERSION}: upgrade reconciler"
        )
    return version


def _has_meta(conn: psycopg.Connection[DictRow], render: Render) -> bool:
    return conn.execute(render("SELECT 1 FROM {meta}")).fetchone() is not None


def _refuse_foreign(conn: psycopg.Connection[DictRow], schema: str, location: str) -> None:
    rows = conn.execute(
        "SELECT c.relname FROM pg_catalog.pg_class AS c"
        " JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = ANY(%s) ORDER BY c.relname",
        (schema, _OWN_RELATIONS),
    ).fetchall()
    if rows:
        names = ", ".join(str(row["relname"]) for row in rows)
        raise StateError(
            f"{location} is not a reconciler state: it has {names} but no"
            " schema_version table; choose another schema"
        )
