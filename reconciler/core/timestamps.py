"""The one spelling of a moment the project writes (plans, journal, observations): ISO 8601 in
UTC to the second with a `Z`, e.g. `2026-12-03T08:52:20Z`. One spelling everywhere lets users
and tools compare stamps as text, and keeps `state list` columns one width."""

from __future__ import annotations

from datetime import UTC, datetime

FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def utc_timestamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime(FORMAT)
