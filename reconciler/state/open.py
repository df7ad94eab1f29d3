"""Pick the state store a `RECONCILER_STATE` value names: a SQLite file or a PostgreSQL URL."""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import cast

from reconciler.errors import StateError
from reconciler.state.base import StateStore
from reconciler.state.sqlite import SqliteStateStore

_POSTGRES_SCHEMES = ("postgresql", "postgres")
_SQLITE_PREFIX = "sqlite:///"
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def open_state(url: str, *, create: bool = True) -> StateStore:
    """Open the store named by `url`; without `create`, raise StateMissing rather than create
    anything (no file, no folder, no PostgreSQL schema or table) where no state exists yet.

    A plain path (`~` expanded) or a `sqlite:///path` URL opens a SQLite file; as in
    SQLAlchemy, `sqlite:///rel/state.db` is relative and `sqlite:////abs/state.db` absolute.
    `postgresql://` and `postgres://` URLs open PostgreSQL.
    """
    if not url.strip():
        raise StateError("the state location is empty: set RECONCILER_STATE")
    match = _SCHEME.match(url)
    if match is None:
        return SqliteStateStore(Path(url).expanduser(), create=create)
    scheme = match.group(1).lower()
    if scheme == "sqlite":
        if not url.startswith(_SQLITE_PREFIX) or len(url) == len(_SQLITE_PREFIX):
            raise StateError(f"a SQLite state URL looks like sqlite:///path/to/state.db, not {url}")
        return SqliteStateStore(Path(url[len(_SQLITE_PREFIX) :]).expanduser(), create=create)
    if scheme in _POSTGRES_SCHEMES:
        return _open_postgres(url, create)
    raise StateError(
        f"unsupported state URL scheme {scheme!r}: use a file path, sqlite:///path or postgresql://"
    )


def _open_postgres(url: str, create: bool) -> StateStore:
    # Imported lazily so that SQLite users never load the PostgreSQL driver; imported by name
    # so that this module does not depend on that one at type-checking time either.
    try:
        module = importlib.import_module("reconciler.state.postgres")
    except ImportError as exc:
        raise StateError(f"PostgreSQL state needs reconciler.state.postgres: {exc}") from exc
    return cast(StateStore, module.PostgresStateStore(url, create=create))
