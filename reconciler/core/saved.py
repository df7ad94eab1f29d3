"""Saved plans: the reviewed plan, applied exactly as reviewed, or refused as stale.

A saved plan is the JSON plan document (schemas/plan.schema.json) with `"kind":
"reconciler-plan"`. It carries each action's declared session (references such as
`${env:NAME}` as written, never a secret value), the state's lineage and serial it was made
against, and its creation time. Applying it re-reads no manifest: the files may have moved on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from reconciler.core.model import Announcement, DesiredSession, Location, SessionRecord, StateMeta
from reconciler.core.normalize import SensitivePaths, sensitive_leaves, sensitive_trie
from reconciler.core.plan import Action, ActionKind, FieldChange, Plan
from reconciler.core.providers import ProviderRules
from reconciler.core.render import PLAN_FORMAT_VERSION, PLAN_KIND
from reconciler.core.secrets import is_reference
from reconciler.errors import PlanRefused, Problem


def is_saved_plan(document: Any) -> bool:
    return isinstance(document, dict) and document.get("kind") == PLAN_KIND


def literal_secrets(plan: Plan, sensitive: Mapping[str, SensitivePaths]) -> list[Problem]:
    """Sensitive fields holding a literal value: such a plan cannot be saved, since the file
    must not hold the secret and `apply FILE` would have nothing to send. Each is reported
    where it was written: a literal in a file's `defaults` once, at `/defaults/...`."""
    problems: set[Problem] = set()
    for action in plan.actions:
        session = action.desired
        if session is None or action.kind is ActionKind.NOOP:
            continue
        paths = sensitive.get(session.provider, frozenset())
        for pointer in _literal_sensitive_pointers(session.spec, paths):
            place = session.location_of(pointer)
            problems.add(
                Problem(
                    place.file,
                    place.pointer,
                    "a saved plan cannot hold a literal secret: use ${env:NAME} or ${file:PATH}",
                    place.line,
                )
            )
    return sorted(problems, key=lambda p: (p.file, p.line or 0, p.pointer))


def _literal_sensitive_pointers(spec: Any, paths: SensitivePaths) -> list[str]:
    return [
        pointer
        for pointer, value in sensitive_leaves(spec, sensitive_trie(paths))
        if not is_reference(value)
    ]


@dataclass(frozen=True, slots=True)
class SavedPlan:
    lineage: str
    serial: int
    created_at: str
    actions: tuple[dict[str, Any], ...]
    refused: bool  # it had violations when it was made (such a plan is never saved)
    notes: tuple[str, ...] = ()
    outside_selection: int = 0


def parse_saved_plan(document: Mapping[str, Any], path: str) -> SavedPlan:
    if document.get("format_version") != PLAN_FORMAT_VERSION:
        raise PlanRefused(
            f"{path}: plan format version {document.get('format_version')!r} is not "
            f"{PLAN_FORMAT_VERSION}: make the plan again with this reconciler"
        )

    def field(name: str, kind: type) -> Any:
        value = document.get(name)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
            raise PlanRefused(
                f"{path}: not a usable saved plan: field {name!r} is missing or not "
                f"{_KIND_NAMES.get(kind, 'valid')}"
            )
        return value

    summary = field("summary", dict)
    try:
        return SavedPlan(
            lineage=field("lineage", str),
            serial=field("serial", int),
            created_at=field("created_at", str),
            actions=tuple(field("actions", list)),
            refused=bool(field("violations", list)),
            notes=tuple(str(note) for note in field("notes", list)),
            outside_selection=int(summary.get("outside_selection", 0)),
        )
    except (TypeError, ValueError) as exc:
        raise PlanRefused(f"{path}: not a usable saved plan ({exc})") from None


_KIND_NAMES: dict[type, str] = {
    str: "a string",
    int: "an integer",
    list: "a list",
    dict: "an object",
}


def foreign_lineage(saved: SavedPlan, meta: StateMeta) -> str | None:
    """Why a saved plan belongs to another state, or None when its lineage is this state's.

    Checked before the MAC: a plan for another state is stale, not modified."""
    if saved.lineage == meta.lineage:
        return None
    return (
        f"the plan is stale: it was made for another state (lineage {saved.lineage}, "
        f"this state is {meta.lineage})"
    )


def staleness(saved: SavedPlan, meta: StateMeta, now: datetime, max_age: float) -> str | None:
    """Why the saved plan no longer describes this state, or None when it still does."""
    foreign = foreign_lineage(saved, meta)
    if foreign is not None:
        return foreign
    if saved.serial != meta.serial:
        return (
            f"the plan is stale: the state changed since it was made (serial {saved.serial} "
            f"then, {meta.serial} now): make a new plan"
        )
    if max_age > 0:
        made = datetime.fromisoformat(saved.created_at.replace("Z", "+00:00"))
        age = (now - made).total_seconds()
        if age > max_age:
            return (
                f"the plan is stale: it is {age / 3600:.1f} h old, older than the maximum of "
                f"{max_age / 3600:.1f} h (RECONCILER_PLAN_MAX_AGE): make a new plan"
            )
    return None


def plan_from_saved(
    saved: SavedPlan,
    records: Sequence[SessionRecord],
    path: str,
    rules: Mapping[str, ProviderRules],
) -> Plan:
    """The reviewed actions, bound to the records they were made against (same serial)."""
    try:
        return _plan_from_saved(saved, records, rules)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise PlanRefused(f"{path}: not a usable saved plan ({exc!r})") from None


def _plan_from_saved(
    saved: SavedPlan, records: Sequence[SessionRecord], rules: Mapping[str, ProviderRules]
) -> Plan:
    recorded = {record.name: record for record in records}
    actions: list[Action] = []
    for item in saved.actions:
        kind = ActionKind(item["kind"])
        if kind is ActionKind.NOOP:
            continue
        name = str(item["name"])
        record = recorded.get(name)
        if kind is not ActionKind.CREATE and record is None:
            raise PlanRefused(f'the plan is stale: session "{name}" is no longer recorded')
        desired = item.get("desired")
        actions.append(
            Action(
                kind=kind,
                name=name,
                provider=str(item["provider"]),
                identity=str(item["identity"]),
                reason=str(item["reason"]),
                changed_paths=tuple(item.get("changed_paths", ())),
                sensitive_paths=tuple(item.get("sensitive_paths", ())),
                field_changes=tuple(
                    FieldChange(c["path"], c["before"], c["after"], bool(c["sensitive"]))
                    for c in item.get("field_changes", ())
                ),
                previous_identity=item.get("previous_identity"),
                announcements=tuple(_announcement(a) for a in item.get("announcements", ())),
                in_place_paths=tuple(str(p) for p in item.get("in_place_paths", ())),
                not_played=tuple(_announcement(a) for a in item.get("not_played", ())),
                desired=_desired(desired, rules) if desired is not None else None,
                recorded=record,
            )
        )
    return Plan(
        tuple(actions),
        saved.lineage,
        saved.serial,
        created_at=saved.created_at,
        notes=saved.notes,
        outside_selection=saved.outside_selection,
    )


def _announcement(item: Mapping[str, Any]) -> Announcement:
    return Announcement(str(item["id"]), str(item["message"]), int(item["interrupt_mode"]))


def _desired(item: Mapping[str, Any], rules: Mapping[str, ProviderRules]) -> DesiredSession:
    provider = str(item["provider"])
    spec = dict(item["spec"])
    source = item.get("source", {})
    return DesiredSession(
        name=str(item["name"]),
        provider=provider,
        identity=rules[provider].identity(spec),
        spec=spec,
        labels=dict(item.get("labels", {})),
        protect=bool(item.get("protect", False)),
        announcements=tuple(_announcement(a) for a in item.get("announcements", ())),
        passthrough=tuple(item.get("passthrough", ())),
        source=Location(str(source.get("file", "")), str(source.get("pointer", ""))),
    )
