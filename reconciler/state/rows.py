"""The parts of a record both stores keep the same way, as text: the observation is one JSON
document, so SQLite and PostgreSQL answer with identical strings."""

from __future__ import annotations

import json
from typing import Any

from reconciler.core.model import Liveness, Observation, Status

_STATUSES = {status.value: status for status in Status}


def status_of(text: str) -> Status:
    """The status a column holds; ValueError on anything else."""
    return _STATUSES.get(text) or Status(text)


def json_column(text: str) -> Any:
    """A JSON column's value; ValueError on malformed text. Most records hold no provider ids
    yet, no delivered announcements or no labels: those texts need no parse (a listing of
    thousands of records would make three parses per record)."""
    if text == "{}":
        return {}
    if text == "[]":
        return []
    return json.loads(text)


def observation_text(observation: Observation | None) -> str | None:
    if observation is None:
        return None
    document = {
        "liveness": observation.liveness.value,
        "status": observation.status,
        "observed_at": observation.observed_at,
        "ended_at": observation.ended_at,
        "reason": observation.reason,
    }
    return json.dumps(document, sort_keys=True, ensure_ascii=False)


def ended_in(text: str | None) -> bool:
    """Whether an observation column says the session ended (as observation_of(text).ended)."""
    observation = observation_of(text)
    return observation is not None and observation.ended


def observation_of(text: str | None) -> Observation | None:
    """The observation a column holds; raises ValueError/TypeError on anything else (the store
    reports the record as corrupt)."""
    if text is None:
        return None
    document = json.loads(text)
    if not isinstance(document, dict):
        raise TypeError("observation: expected a JSON object")
    ended_at = document.get("ended_at")
    return Observation(
        liveness=Liveness(document["liveness"]),
        status=str(document.get("status", "")),
        observed_at=str(document["observed_at"]),
        ended_at=None if ended_at is None else str(ended_at),
        reason=str(document.get("reason", "")),
    )
