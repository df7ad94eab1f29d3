"""What the records become once an action's calls have succeeded. Pure: the apply shell calls
these with the answers it got, and the property tests call them to check that planning again
after an apply yields only no-ops."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace

from reconciler.core.model import DesiredSession, SessionRecord, Status
from reconciler.core.normalize import SensitivePaths, canonical_json, fingerprint, redact
from reconciler.core.plan import Action, ActionKind
from reconciler.core.providers import ProviderRules


def started_record(
    session: DesiredSession,
    provider_ids: Mapping[str, str],
    key: bytes,
    sensitive: Mapping[str, SensitivePaths],
    secrets: Mapping[str, str],
    now: str,
    previous: SessionRecord | None = None,
    attempt: str | None = None,
) -> SessionRecord:
    """The record of a session whose Start succeeded; `provider_ids` are its declared identity
    fields and whatever ids the cloud assigned (Aliyun's InstanceId), `attempt` the owner
    tag's attempt that Start carried.

    Announcements already listed when a session starts are recorded as delivered without being
    played: a just-started agent greets with its WelcomeMessage, and an old notice replayed into
    every new conversation is not what an operator means by "announce this once".
    """
    redacted = redact(session.spec, sensitive.get(session.provider, frozenset()), key, secrets)
    delivered = set(previous.announcements_delivered) if previous else set()
    delivered.update(a.id for a in session.announcements)
    return SessionRecord(
        name=session.name,
        provider=session.provider,
        identity=session.identity,
        fingerprint=fingerprint(redacted),
        spec_json=canonical_json(redacted),
        status=Status.RUNNING,
        provider_ids=dict(provider_ids),
        announcements_delivered=tuple(sorted(delivered)),
        protect=session.protect,
        labels=dict(session.labels),
        created_at=now,
        updated_at=now,
        last_error=None,
        source=session.source.file or (previous.source if previous else None),
        attempt=attempt,
    )


def updated_record(
    record: SessionRecord,
    session: DesiredSession,
    delivered: Iterable[str],
    now: str,
    last_error: str | None = None,
) -> SessionRecord:
    """The record after an in-place update: new labels/protect and the announcements delivered."""
    return replace(
        record,
        announcements_delivered=tuple(sorted(set(record.announcements_delivered) | set(delivered))),
        protect=session.protect,
        labels=dict(session.labels),
        updated_at=now,
        last_error=last_error,
        # A session moved to another file is now declared there; recovery (no files) keeps it.
        source=session.source.file or record.source,
    )


def reconfigured_record(
    record: SessionRecord,
    session: DesiredSession,
    key: bytes,
    sensitive: Mapping[str, SensitivePaths],
    secrets: Mapping[str, str],
    now: str,
) -> SessionRecord:
    """The record once the provider accepted the declared spec in place: its spec and
    fingerprint move, so the next plan compares against what now runs."""
    redacted = redact(session.spec, sensitive.get(session.provider, frozenset()), key, secrets)
    return replace(
        record,
        fingerprint=fingerprint(redacted),
        spec_json=canonical_json(redacted),
        updated_at=now,
        last_error=None,
    )


def with_error(record: SessionRecord, error: str, now: str) -> SessionRecord:
    """The record, unchanged but for the last error (a failed stop keeps the record)."""
    return replace(record, updated_at=now, last_error=error)


def action_outcome(
    action: Action,
    key: bytes,
    sensitive: Mapping[str, SensitivePaths],
    secrets: Mapping[str, str],
    now: str,
    *,
    rules: Mapping[str, ProviderRules],
    assigned: Mapping[str, str] | None = None,
    attempt: str | None = None,
) -> SessionRecord | None:
    """The record once every call of the action succeeded (None: the session is gone);
    `assigned` are the ids a Start returned and `attempt` its owner tag's attempt."""
    if action.kind is ActionKind.DELETE:
        return None
    if action.kind in (ActionKind.CREATE, ActionKind.REPLACE):
        session = action.desired
        assert session is not None
        ids = {**rules[session.provider].identity_ids(session.spec), **(assigned or {})}
        return started_record(session, ids, key, sensitive, secrets, now, action.recorded, attempt)
    assert action.recorded is not None
    if action.kind is ActionKind.UPDATE:
        assert action.desired is not None
        record = action.recorded
        if action.in_place_paths:
            record = reconfigured_record(record, action.desired, key, sensitive, secrets, now)
        delivered = (a.id for a in action.announcements)
        return updated_record(record, action.desired, delivered, now)
    return action.recorded
