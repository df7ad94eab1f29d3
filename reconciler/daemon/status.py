"""What the daemon shows of each session: /status and the reconciler_sessions gauge.

Built from the last good desired set, the records (as of the last pass) and the backoff, so
the answer costs no state read per request. Statuses, one per session:
    running   recorded, and (where the cloud can be asked) last seen running
    pending   declared, not recorded yet (its Start comes with the next pass)
    ended     the cloud says it ended by itself; the next pass starts it again
    error     recorded, and its last call failed
    unknown   recorded, but the cloud could not say what became of it
    backoff   failing: waiting before its next attempt (see next_retry)
    orphaned  recorded but no longer declared: the next pass stops it
Pure.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from reconciler.core.model import DesiredSession, Liveness, SessionRecord
from reconciler.daemon.backoff import Retry


@dataclass(frozen=True, slots=True)
class SessionStatus:
    name: str
    provider: str
    status: str
    last_observed: str | None
    last_error: str | None
    next_retry: str | None
    failures: int = 0


def session_statuses(
    desired: Sequence[DesiredSession],
    records: Sequence[SessionRecord],
    retries: Mapping[str, tuple[Retry, str]],  # name → (retry, its due time as ISO 8601)
) -> list[SessionStatus]:
    by_name = {record.name: record for record in records}
    declared = {session.name: session for session in desired}
    statuses: list[SessionStatus] = []
    for name in sorted(declared.keys() | by_name.keys()):
        record = by_name.get(name)
        session = declared.get(name)
        provider = session.provider if session is not None else by_name[name].provider
        retry = retries.get(name)
        observation = record.observation if record is not None else None
        if session is None:
            status = "orphaned"
        elif retry is not None:
            status = "backoff"
        elif record is None:
            status = "pending"
        elif observation is not None and observation.liveness is Liveness.ENDED:
            status = "ended"
        elif record.last_error:
            status = "error"
        elif observation is not None and observation.liveness is Liveness.UNKNOWN:
            status = "unknown"
        else:
            status = "running"
        last_error = retry[0].error if retry is not None else None
        if last_error is None and record is not None:
            last_error = record.last_error
        statuses.append(
            SessionStatus(
                name=name,
                provider=provider,
                status=status,
                last_observed=observation.observed_at if observation is not None else None,
                last_error=last_error,
                next_retry=retry[1] if retry is not None else None,
                failures=retry[0].failures if retry is not None else 0,
            )
        )
    return statuses


def session_counts(statuses: Sequence[SessionStatus]) -> dict[tuple[str, str], int]:
    """reconciler_sessions{provider,status}."""
    return dict(Counter((s.provider, s.status) for s in statuses))
