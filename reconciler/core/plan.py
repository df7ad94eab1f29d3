"""Desired × recorded → actions. Pure and deterministic: the same inputs give the same plan.

Each session gets exactly one action:
    create   declared, not running (or it ended by itself)    → Start
    delete   running, no longer declared                      → Stop
    replace  running with another identity, or a config change → Stop, then Start (cuts the
             outside the provider's in-place fields            live conversation)
    update   running, config changed only in in-place fields  → the provider's update call
             and/or new announcements                         → one announce call each
             or changed labels/protect only                   → the record only, no call
    keep     protected, no longer declared                    → nothing: it keeps running (as
             Argo CD's Prune=false); shown, but not a change
    noop     nothing to do
Guards turn a dangerous plan into violations; a plan with violations must not be applied.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field, replace
from enum import StrEnum

from reconciler.core.model import (
    Announcement,
    DesiredSession,
    LiveSession,
    Observation,
    SessionRecord,
    StateMeta,
)
from reconciler.core.normalize import (
    Redactor,
    SensitivePaths,
    changed_paths,
    is_marker,
    relaxed,
    value_at,
)
from reconciler.core.providers import ProviderRules
from reconciler.core.selection import EVERY_SESSION, Selection
from reconciler.core.settled import SettledFile

DEFAULT_MAX_STOPS = 20


class ActionKind(StrEnum):
    CREATE = "create"
    DELETE = "delete"
    REPLACE = "replace"
    UPDATE = "update"
    KEEP = "keep"
    NOOP = "noop"


# Kinds that call nothing and change no record.
UNCHANGING = frozenset({ActionKind.KEEP, ActionKind.NOOP})
KEPT_REASON = "kept: protected (no longer declared)"
UP_TO_DATE = "up to date"


@dataclass(slots=True)
class PlanMemo:
    """What make_plan may remember between plans made with the same fingerprint key and
    secrets (a daemon's): each session's redacted spec text, and the action a
    session was planned as against a record. Keyed by the objects' ids, holding the objects
    (so an id is never another object's): the daemon's reader hands back the same session
    objects for unchanged files, its record cache the same record objects for unchanged
    records, so a no-change pass compares nothing twice. Entries of sessions no longer
    declared are dropped by each plan."""

    texts: dict[int, tuple[DesiredSession, str]] = field(default_factory=dict)
    compared: dict[int, tuple[DesiredSession, SessionRecord, Action]] = field(default_factory=dict)

    def clear(self) -> None:
        self.texts.clear()
        self.compared.clear()

    def keep_only(self, sessions: Sequence[DesiredSession]) -> None:
        alive = {id(session) for session in sessions}
        for table in (self.texts, self.compared):
            for gone in [key for key in table if key not in alive]:
                del table[gone]


@dataclass(frozen=True, slots=True)
class Guards:
    allow_empty: bool = False
    # How many running sessions one apply may stop (deletes + restarts); None means no limit.
    max_stops: int | None = DEFAULT_MAX_STOPS


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One changed leaf, for display: sensitive values are never carried, only the fact."""

    path: str
    before: object
    after: object
    sensitive: bool = False


@dataclass(frozen=True, slots=True)
class Action:
    kind: ActionKind
    name: str
    provider: str
    identity: str
    reason: str
    changed_paths: tuple[str, ...] = ()
    sensitive_paths: tuple[str, ...] = ()
    field_changes: tuple[FieldChange, ...] = ()
    previous_identity: str | None = None
    announcements: tuple[Announcement, ...] = ()
    # The spec pointers an update changes in place (all under the provider's in-place
    # prefixes): apply sends them with the provider's update call and moves the record's spec.
    in_place_paths: tuple[str, ...] = ()
    # New announcements a replace does not play: the restart starts a new conversation, so
    # apply records them as delivered, as for a create.
    not_played: tuple[Announcement, ...] = ()
    desired: DesiredSession | None = None
    recorded: SessionRecord | None = None

    @property
    def stops(self) -> bool:
        return self.kind in (ActionKind.DELETE, ActionKind.REPLACE)

    @property
    def cuts_conversation(self) -> bool:
        """A restart ends the live conversation; the user hears the agent drop and come back."""
        return self.kind is ActionKind.REPLACE

    @property
    def record_only(self) -> bool:
        """An update of labels/protect only: the record changes, the cloud is not called."""
        return self.kind is ActionKind.UPDATE and not self.announcements and not self.in_place_paths


@dataclass(frozen=True, slots=True)
class Summary:
    create: int = 0
    delete: int = 0
    replace: int = 0
    update: int = 0
    keep: int = 0
    noop: int = 0

    @property
    def changes(self) -> int:
        return self.create + self.delete + self.replace + self.update


@dataclass(frozen=True, slots=True)
class Plan:
    actions: tuple[Action, ...]
    lineage: str
    serial: int
    violations: tuple[str, ...] = ()
    created_at: str = ""
    max_stops: int | None = DEFAULT_MAX_STOPS
    notes: tuple[str, ...] = field(default=())
    # Sessions (declared or recorded) that a -l / --target selection left out of this plan.
    outside_selection: int = 0

    @property
    def changes(self) -> tuple[Action, ...]:
        return tuple(action for action in self.actions if action.kind not in UNCHANGING)

    @property
    def kept(self) -> tuple[Action, ...]:
        return tuple(action for action in self.actions if action.kind is ActionKind.KEEP)

    @property
    def summary(self) -> Summary:
        counts = {kind: 0 for kind in ActionKind}
        for action in self.actions:
            counts[action.kind] += 1
        return Summary(
            create=counts[ActionKind.CREATE],
            delete=counts[ActionKind.DELETE],
            replace=counts[ActionKind.REPLACE],
            update=counts[ActionKind.UPDATE],
            keep=counts[ActionKind.KEEP],
            noop=counts[ActionKind.NOOP],
        )


def make_plan(
    desired: Sequence[DesiredSession],
    records: Sequence[SessionRecord],
    meta: StateMeta,
    sensitive: Mapping[str, SensitivePaths],
    secrets: Mapping[str, str],
    guards: Guards = Guards(),
    created_at: str = "",
    selection: Selection = EVERY_SESSION,
    given_paths: Sequence[str] = (),
    empty_references: Set[str] = frozenset(),
    *,
    rules: Mapping[str, ProviderRules],
    live: Sequence[LiveSession] = (),
    memo: PlanMemo | None = None,
    settled: Sequence[SettledFile] = (),
) -> Plan:
    """The plan for the sessions in `selection` (all by default), by each provider's `rules`.
    Records carry what the cloud last said of them (`observation`): one that ended by itself
    is started again. `live` are the live sessions the observing providers listed, for the
    note about those carrying this state's tag that no record tracks. `given_paths` are the
    paths the desired set was read from (each as given and as absolute), for the note about
    records declared elsewhere; empty when unknown (a saved plan, a test). `memo`
    (PlanMemo) remembers between plans made with the same key and secrets. `settled` are
    files not read because the last apply left them settled (see settled.py): each of their
    sessions is a noop against its record, which the caller checked is there
    (`records_agree`) and need not pass in `records` (their noops carry no record); a
    selection reads every file, so the two do not go together."""
    if settled and selection.limited:
        raise ValueError("settled files are not reused under a selection")
    desired, records, outside = _in_scope(desired, records, selection)
    recorded = {record.name: record for record in records}
    declared = {session.name for session in desired}
    declared.update(session.name for file in settled for session in file.sessions)
    unresolved = {ref for s in desired for ref in s.secret_references} - secrets.keys()
    redactors = {
        name: Redactor(sensitive.get(name, frozenset()), meta.fingerprint_key, secrets)
        for name in {session.provider for session in desired}
    }
    actions: list[Action] = []
    for session in desired:
        record = recorded.get(session.name)
        if record is None:
            actions.append(_create(session))
        elif record.observation is not None and record.observation.ended:
            actions.append(
                replace(_create(session), reason=ended_reason(record.observation), recorded=record)
            )
        else:
            redactor = redactors[session.provider]
            actions.append(
                _compare(session, record, redactor, unresolved, rules[session.provider], memo)
            )
    for file in settled:
        for unchanged in file.sessions:
            actions.append(
                Action(
                    ActionKind.NOOP,
                    unchanged.name,
                    unchanged.provider,
                    unchanged.identity,
                    UP_TO_DATE,
                )
            )
    for record in records:
        if record.name not in declared:
            # Protection is kept in the record: a protected session whose declaration was
            # removed keeps running and does not block the rest of the plan. One that ended by
            # itself is not running to keep: its Stop only confirms it and drops the record.
            ended = record.observation is not None and record.observation.ended
            kept = record.protect and not ended
            reason = "no longer declared" + (" (it had ended by itself)" if ended else "")
            actions.append(
                Action(
                    ActionKind.KEEP if kept else ActionKind.DELETE,
                    record.name,
                    record.provider,
                    record.identity,
                    KEPT_REASON if kept else reason,
                    recorded=record,
                )
            )
    actions.sort(key=lambda action: action.name)
    if memo is not None:
        memo.keep_only(desired)
    return Plan(
        actions=tuple(actions),
        lineage=meta.lineage,
        serial=meta.serial,
        violations=tuple(_violations(actions, bool(declared), guards, selection)),
        created_at=created_at,
        max_stops=guards.max_stops,
        notes=_unresolved_note(sorted(unresolved), sorted(empty_references & unresolved))
        + _outside_paths_note(actions, given_paths)
        + untracked_notes(live, records, meta.lineage),
        outside_selection=outside,
    )


def ended_reason(observation: Observation) -> str:
    """Why a recorded session is started again: it ended by itself, with when and why."""
    details = [observation.reason] if observation.reason else []
    if observation.ended_at:
        details.append(f"at {observation.ended_at}")
    details.append(f"observed {observation.observed_at}")
    return f"ended by itself ({', '.join(details)}); started again"


def untracked_notes(
    live: Sequence[LiveSession], records: Sequence[SessionRecord], lineage: str
) -> tuple[str, ...]:
    """Live sessions carrying this state's tag that no record tracks: a Start whose answer was
    lost and was not settled, or a record removed by hand. They run (and cost) unseen."""
    tracked = {(record.name, record.attempt) for record in records}
    untracked = sorted(
        (session.owner.session, session.owner.attempt, "/".join(session.identity.values()))
        for session in live
        if session.owner is not None
        and session.owner.lineage == lineage
        and (session.owner.session, session.owner.attempt) not in tracked
    )
    return tuple(
        f'untracked live session with this state\'s tag: "{name}" (attempt {attempt}) runs as '
        f"{identity} but no record tracks it; a restart into the same channel replaces it"
        for name, attempt, identity in untracked
    )


def _in_scope(
    desired: Sequence[DesiredSession], records: Sequence[SessionRecord], selection: Selection
) -> tuple[Sequence[DesiredSession], Sequence[SessionRecord], int]:
    """The declared sessions and records the selection keeps, and how many it leaves out.
    A declared session is judged by its declared labels; a record no longer declared by the
    labels it was recorded with."""
    if not selection.limited:
        return desired, records, 0
    declared = {session.name for session in desired}
    selection.check_targets(declared | {record.name for record in records})
    kept_desired = [s for s in desired if selection.includes(s.name, s.labels)]
    kept_names = {session.name for session in kept_desired}
    kept_records = [
        r
        for r in records
        if r.name in kept_names or (r.name not in declared and selection.includes(r.name, r.labels))
    ]
    every = declared | {record.name for record in records}
    considered = kept_names | {record.name for record in kept_records}
    return kept_desired, kept_records, len(every - considered)


def _outside_paths_note(actions: Sequence[Action], given_paths: Sequence[str]) -> tuple[str, ...]:
    """Say so when the plan stops sessions declared in files outside the paths given: the
    usual cause is a subdirectory passed where the whole tree was meant."""
    if not given_paths:
        return ()
    roots = [posixpath.normpath(path) for path in given_paths]
    sources = [
        action.recorded.source
        for action in actions
        if action.kind is ActionKind.DELETE and action.recorded and action.recorded.source
    ]
    outside = [source for source in sources if not any(_within(source, r) for r in roots)]
    if not outside:
        return ()
    count, elsewhere = len(outside), sorted(set(outside))
    shown = ", ".join(elsewhere[:3]) + (", ..." if len(elsewhere) > 3 else "")
    return (
        f"{count} session(s) to stop were declared in files outside the given paths ({shown}): "
        "pass the directory that holds every manifest, or limit the plan with -l / --target",
    )


def _within(source: str, root: str) -> bool:
    path = posixpath.normpath(source)
    if root == ".":
        return not posixpath.isabs(path)
    return path == root or path.startswith(root.rstrip("/") + "/")


def _create(session: DesiredSession) -> Action:
    return Action(
        ActionKind.CREATE,
        session.name,
        session.provider,
        session.identity,
        "declared, not running",
        desired=session,
    )


def _compare(
    session: DesiredSession,
    record: SessionRecord,
    redactor: Redactor,
    unresolved: Set[str],
    rules: ProviderRules,
    memo: PlanMemo | None = None,
) -> Action:
    if memo is not None:
        known = memo.compared.get(id(session))
        if known is not None and known[0] is session and known[1] is record:
            return known[2]
        action = _compare_anew(session, record, redactor, unresolved, rules, memo)
        memo.compared[id(session)] = (session, record, action)
        return action
    return _compare_anew(session, record, redactor, unresolved, rules, None)


def _compare_anew(
    session: DesiredSession,
    record: SessionRecord,
    redactor: Redactor,
    unresolved: Set[str],
    rules: ProviderRules,
    memo: PlanMemo | None,
) -> Action:
    noop = Action(
        ActionKind.NOOP,
        session.name,
        session.provider,
        session.identity,
        UP_TO_DATE,
        desired=session,
        recorded=record,
    )
    delivered = set(record.announcements_delivered)
    pending = tuple(a for a in session.announcements if a.id not in delivered)
    if record.provider != session.provider or record.identity != session.identity:
        return replace(
            noop,
            kind=ActionKind.REPLACE,
            reason=(f"{rules.noun} identity changed (was {record.provider} {record.identity})"),
            previous_identity=record.identity,
            not_played=pending,
        )
    reasons: list[str] = []
    config = _config_changes(session, record, redactor, unresolved, memo)
    if config is not None:
        paths, secret_paths, field_changes = config
        fixed = tuple(path for path in paths if not rules.updatable_in_place(path))
        reasons.append(_config_reason(paths, secret_paths, fixed, rules))
        if fixed:
            return replace(
                noop,
                kind=ActionKind.REPLACE,
                reason=reasons[0],
                changed_paths=paths,
                sensitive_paths=secret_paths,
                field_changes=field_changes,
                not_played=pending,
            )
    else:
        paths, secret_paths, field_changes = (), (), ()
    # An in-place update also carries the new announcements and record fields: recording the
    # outcome must leave nothing for the next plan to do.
    record_fields = _record_field_changes(session, record)
    if pending:
        ids = ", ".join(a.id for a in pending)
        reasons.append(f"new announcement{'s' if len(pending) > 1 else ''}: {ids}")
    if record_fields:
        what = " and ".join(record_fields)
        reasons.append(f"{what} changed" + ("" if paths else " (record only)"))
    if not reasons:
        return noop
    return replace(
        noop,
        kind=ActionKind.UPDATE,
        reason="; ".join(reasons),
        changed_paths=paths + tuple(f"/{name}" for name in record_fields),
        sensitive_paths=secret_paths,
        field_changes=field_changes
        + tuple(
            FieldChange(f"/{name}", _record_value(record, name), _desired_value(session, name))
            for name in record_fields
        ),
        announcements=pending,
        in_place_paths=paths,
    )


def _config_changes(
    session: DesiredSession,
    record: SessionRecord,
    redactor: Redactor,
    unresolved: Set[str],
    memo: PlanMemo | None = None,
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[FieldChange, ...]] | None:
    """The changed spec pointers, those holding sensitive values, and each change for display;
    None when the declared spec is the recorded one."""
    known = memo.texts.get(id(session)) if memo is not None else None
    # The texts themselves, not their fingerprints: the record's fingerprint is the hash of
    # its text, and comparing ~1.5 KB costs less than hashing it.
    if known is not None and known[0] is session and known[1] == record.spec_json:
        return None
    text = redactor.text(session.spec)
    if memo is not None:
        memo.texts[id(session)] = (session, text)
    recorded_text = record.spec_json
    changed = text != recorded_text
    missing = session.secret_references & unresolved
    if changed and missing:
        # References that cannot be resolved here are compared by name (see normalize.py).
        recorded_text = relaxed(record.spec_json, missing)
        changed = text != recorded_text
    if not changed:
        return None
    old, redacted = json.loads(recorded_text), json.loads(text)
    paths = tuple(changed_paths(old, redacted))
    secret_paths = tuple(
        p for p in paths if is_marker(value_at(old, p)) or is_marker(value_at(redacted, p))
    )
    field_changes = tuple(
        FieldChange(
            path,
            None if path in secret_paths else value_at(old, path),
            None if path in secret_paths else value_at(redacted, path),
            path in secret_paths,
        )
        for path in paths
    )
    return paths, secret_paths, field_changes


def _config_reason(
    paths: Sequence[str], secret_paths: Sequence[str], fixed: Sequence[str], rules: ProviderRules
) -> str:
    if secret_paths and len(secret_paths) == len(paths):
        what = "sensitive value changed"
    elif secret_paths:
        what = "config changed, including a sensitive value"
    else:
        what = "config changed"
    if not fixed:
        return f"{what}; updated in place"
    if not rules.in_place_prefixes:
        return f"{what}; a running {rules.noun} cannot change its config, so it is restarted"
    shown = ", ".join(fixed[:3]) + (", ..." if len(fixed) > 3 else "")
    return f"{what}; a running {rules.noun} cannot change {shown} in place, so it is restarted"


def _record_field_changes(session: DesiredSession, record: SessionRecord) -> list[str]:
    changed = []
    if dict(session.labels) != dict(record.labels):
        changed.append("labels")
    if session.protect != record.protect:
        changed.append("protect")
    return changed


def _record_value(record: SessionRecord, name: str) -> object:
    return dict(record.labels) if name == "labels" else record.protect


def _desired_value(session: DesiredSession, name: str) -> object:
    return dict(session.labels) if name == "labels" else session.protect


def _violations(
    actions: Sequence[Action],
    any_declared: bool,
    guards: Guards,
    selection: Selection,
) -> list[str]:
    violations: list[str] = []
    deletes = sum(1 for action in actions if action.kind is ActionKind.DELETE)
    # Sessions named with --target are stopped on purpose; an empty set is not an accident.
    if not any_declared and deletes and not guards.allow_empty and not selection.targets:
        if selection.limited:
            what = "no session in the selection is declared"
        else:
            what = "the desired set is empty"
        violations.append(
            f"{what} but {deletes} session(s) are recorded as running: "
            "refusing to stop them all (pass --allow-empty if that is really meant)"
        )
    for action in actions:
        if action.kind is ActionKind.REPLACE and action.desired and action.desired.protect:
            violations.append(
                f'session "{action.name}" is protected: refusing to restart it for '
                f'"{action.reason}" (set "protect": false to allow the restart)'
            )
    stops = sum(1 for action in actions if action.stops)
    if guards.max_stops is not None and stops > guards.max_stops:
        violations.append(
            f"the plan stops {stops} running sessions, more than the budget of "
            f"{guards.max_stops} per apply: review it and pass --max-stops {stops} to allow it"
        )
    return violations


def _unresolved_note(references: Sequence[str], empty: Sequence[str]) -> tuple[str, ...]:
    if not references:
        return ()
    notes = [
        f"{len(references)} secret reference(s) could not be resolved here ({_shown(references)}): "
        "they are compared by name, so a rotated value does not show in this plan"
    ]
    if empty:
        # CI gives an empty string for a secret that is not configured: say so in the review.
        notes.append(
            f"{len(empty)} of them resolved to an empty value ({_shown(empty)}): apply refuses "
            "an empty secret, so set it before applying"
        )
    return tuple(notes)


def _shown(references: Sequence[str]) -> str:
    return ", ".join(references[:5]) + (", ..." if len(references) > 5 else "")
