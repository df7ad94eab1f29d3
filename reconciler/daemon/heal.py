"""Healing drift: which recorded sessions ended by themselves, and which restarts were heals.

A provider that can observe (Aliyun) says so itself when its records are refreshed. One that
cannot (Volcengine) is told by its task-stop callback — which also arrives after the
reconciler's own Stop, and may arrive late, twice, or after a newer task took the same
identity. So a callback marks a record ended only when all of these hold:
  - a record with that provider and identity exists (a task we stopped has no record any more);
  - no intent is pending for that session (a Stop or Start of ours is in flight or unresolved:
    recovery decides, not the callback);
  - the event happened in a later second than the record's Start (a stop event of the task a
    restart replaced is older than the new task's record; stamps are to the second, so an end
    within the very second of its Start is not taken as one — a task that ends at once would
    fail again at once anyway).
The plan then restarts it ("ended by itself"), exactly as for an observed end. Pure functions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

from reconciler.core.model import Liveness, Observation, SessionRecord
from reconciler.core.plan import ActionKind, Plan
from reconciler.daemon.callbacks import VOLCENGINE_TASK_STOP
from reconciler.engine.results import Outcome, SessionResult


def ended_by_callback(
    records: Sequence[SessionRecord],
    ends: Mapping[tuple[str, str], str | None],
    pending: Iterable[str],
    now: str,
) -> list[SessionRecord]:
    """The records a task-stop callback shows ended by themselves, marked so."""
    busy = set(pending)
    marked: list[SessionRecord] = []
    for record in records:
        key = (record.provider, record.identity)
        if key not in ends or record.name in busy:
            continue
        at = ends[key]
        if at is None or not record.created_at or at[:19] <= record.created_at[:19]:
            continue
        if record.observation is not None and record.observation.ended:
            continue
        observation = Observation(
            Liveness.ENDED,
            VOLCENGINE_TASK_STOP,
            now,
            ended_at=at,
            reason="the cloud's callback said so",
        )
        marked.append(replace(record, observation=observation))
    return marked


def heals(plan: Plan, results: Sequence[SessionResult]) -> list[tuple[str, str]]:
    """(provider, session) of each session this pass restarted because it had ended."""
    started = {r.name for r in results if r.outcome is Outcome.OK and r.kind == "create"}
    return [
        (action.provider, action.name)
        for action in plan.actions
        if action.kind is ActionKind.CREATE
        and action.name in started
        and action.recorded is not None
        and action.recorded.observation is not None
        and action.recorded.observation.ended
    ]
