"""`state list` and `state show` with the calls of unknown outcome. Pure: returns data and text.

A pending intent is a call whose answer never came (the run was killed, or every retry of a Start
that may have taken effect failed). Its session may have no record yet (a Start), yet it may be
running: hiding it would let an operator believe nothing runs under that name.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from reconciler.core.model import JournalEntry, SessionRecord
from reconciler.core.render import record_document, render_records


def pending_status(entry: JournalEntry) -> str:
    return f"pending {entry.op.value} (unknown outcome)"


def pending_document(entry: JournalEntry) -> dict[str, Any]:
    """An intent as an operator needs it; the payload holds ids and hashes, never a secret."""
    try:
        payload = json.loads(entry.payload_json)
    except ValueError:
        payload = {}
    document: dict[str, Any] = {
        "journal_id": entry.id,
        "call": entry.op.value,
        "status": pending_status(entry),
        "provider_ids": dict(payload.get("provider_ids") or {}),
        "started_at": entry.started_at,
    }
    announcement = payload.get("announcement")
    if isinstance(announcement, dict) and "id" in announcement:
        document["announcement"] = announcement["id"]
    return document


def session_document(
    name: str, record: SessionRecord | None, pending: Sequence[JournalEntry]
) -> dict[str, Any]:
    """The record (if any) with its pending calls; a name known only from a pending call shows
    that call's status, provider and identity."""
    mine = [pending_document(entry) for entry in pending if entry.name == name]
    if record is not None:
        return {**record_document(record), "pending": mine}
    first = next(entry for entry in pending if entry.name == name)
    return {
        "name": name,
        "provider": first.provider,
        "identity": first.identity,
        "status": pending_status(first),
        "pending": mine,
    }


def listing_documents(
    records: Sequence[SessionRecord], pending: Sequence[JournalEntry]
) -> list[dict[str, Any]]:
    by_name = {record.name: record for record in records}
    names = sorted({*by_name, *(entry.name for entry in pending)})
    return [session_document(name, by_name.get(name), pending) for name in names]


def render_listing(records: Sequence[SessionRecord], pending: Sequence[JournalEntry]) -> str:
    text = render_records(records)
    if not pending:
        return text
    rows = [("NAME", "STATUS", "IDENTITY", "SINCE")]
    rows += sorted(
        (entry.name, pending_status(entry), entry.identity, entry.started_at) for entry in pending
    )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    table = "".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        + "\n"
        for row in rows
    )
    return (
        f"{text}\nCalls of unknown outcome (the next `reconciler apply PATH...` finishes them):\n"
        f"{table}"
    )
