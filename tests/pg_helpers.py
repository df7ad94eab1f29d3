"""Reaching the test PostgreSQL server: skip with the reason where none is reachable, except in
CI (REQUIRE_POSTGRES_TESTS=1), where an unreachable server fails the run instead."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from psycopg import sql

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"


def postgres_url() -> str:
    url = os.environ.get("TEST_POSTGRES_URL", DEFAULT_URL)
    try:
        with psycopg.connect(url, connect_timeout=5):
            pass
    except psycopg.Error as exc:
        # The libpq message names host and port, never the password.
        reason = str(exc).strip().splitlines()[0]
        message = f"no PostgreSQL server reachable at TEST_POSTGRES_URL: {reason}"
        if os.environ.get("REQUIRE_POSTGRES_TESTS") == "1":
            pytest.fail(message + " (REQUIRE_POSTGRES_TESTS=1: these tests must run)")
        pytest.skip(message)
    return url


@contextmanager
def throwaway_schema(url: str) -> Iterator[str]:
    name = f"reconciler_test_{uuid.uuid4().hex[:12]}"
    try:
        yield name
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def state_url(url: str, schema: str) -> str:
    """A RECONCILER_STATE URL whose tables live in `schema`."""
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options=-csearch_path%3D{schema}"
