"""Plans and records as text and as JSON (schemas/plan.schema.json). Pure: returns strings.

Sensitive values never reach an output: sensitive leaves show as "(sensitive)", references as
the reference text (it names where the secret lives, not what it is).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from reconciler.core.json_text import indented_json
from reconciler.core.model import DesiredSession, Observation, SessionRecord
from reconciler.core.normalize import (
    SensitivePaths,
    is_marker,
    marked_along,
    sensitive_keys,
    sensitive_trie,
)
from reconciler.core.plan import UNCHANGING, Action, ActionKind, FieldChange, Plan
from reconciler.core.secrets import escape_token, is_reference

PLAN_FORMAT_VERSION = 1
PLAN_KIND = "reconciler-plan"
MASK = "(sensitive)"

SYMBOLS = {
    ActionKind.CREATE: "+",
    ActionKind.DELETE: "-",
    ActionKind.REPLACE: "-/+",
    ActionKind.UPDATE: "~",
    ActionKind.KEEP: "=",
    ActionKind.NOOP: " ",
}


def summary_line(plan: Plan) -> str:
    summary = plan.summary
    kept = _kept_clause(plan) + _outside_clause(plan)
    if not summary.changes:
        return f"No changes. {summary.noop} running session(s) match the desired state.{kept}"
    parts = []
    if summary.create:
        parts.append(f"{summary.create} to start")
    if summary.replace:
        cut = "conversation" if summary.replace == 1 else "conversations"
        parts.append(f"{summary.replace} to restart (cuts {summary.replace} live {cut})")
    if summary.delete:
        parts.append(f"{summary.delete} to stop")
    if summary.update:
        parts.append(f"{summary.update} to update in place")
    return "Plan: " + ", ".join(parts) + "." + kept


def _outside_clause(plan: Plan) -> str:
    if not plan.outside_selection:
        return ""
    return f" {plan.outside_selection} session(s) outside the selection were not considered."


def _kept_clause(plan: Plan) -> str:
    """The notice for protected sessions no longer declared: they keep running."""
    kept = plan.kept
    if not kept:
        return ""
    names = ", ".join(action.name for action in kept[:5]) + (", ..." if len(kept) > 5 else "")
    return (
        f" Kept: {len(kept)} protected session(s) no longer declared keep running ({names});"
        ' to stop one, declare it with "protect": false, apply, then remove it.'
    )


def render_text(plan: Plan, sensitive: Mapping[str, SensitivePaths]) -> str:
    return "".join(text_chunks(plan, sensitive))


def text_chunks(plan: Plan, sensitive: Mapping[str, SensitivePaths]) -> Iterator[str]:
    """The text plan, one action at a time: a plan of 10,000 creates is ~25 MB of text, which
    the caller writes as it comes instead of holding it whole (twice, while it is joined)."""
    yield from text_head(plan)
    yield from action_chunks(plan.changes, sensitive)
    yield text_tail(plan)


def text_head(plan: Plan) -> Iterator[str]:
    """What comes before the changes (nothing when there is none)."""
    if plan.changes:
        yield "reconciler will perform these actions:\n\n"


def action_chunks(
    actions: Sequence[Action], sensitive: Mapping[str, SensitivePaths]
) -> Iterator[str]:
    """The text of each change (`actions`: plan.changes, or a run of them: the runs' texts
    joined in order are the whole's)."""
    memo = SpecLinesMemo(indent="      ")
    for action in actions:
        lines = _action_lines(action)
        lines += spec_lines(action, sensitive, memo)
        lines.append("")
        yield "\n".join(lines) + "\n"


def text_tail(plan: Plan) -> str:
    """What comes after the changes: the kept sessions, notes, refusals and the summary."""
    tail: list[str] = []
    for action in plan.kept:
        tail.extend(_action_lines(action))
        tail.append("")
    for note in plan.notes:
        tail.append(f"Note: {note}")
    if plan.violations:
        tail.append("Refused: this plan must not be applied:")
        tail.extend(f"  - {violation}" for violation in plan.violations)
    tail.append(summary_line(plan))
    return "\n".join(tail) + "\n"


def _action_lines(action: Action) -> list[str]:
    head = f"  {SYMBOLS[action.kind]} {action.kind.value} {action.name}"
    lines = [f"{head}  ({action.provider} {action.identity})"]
    reason = action.reason
    if action.cuts_conversation:
        reason += " — cuts the live conversation"
    lines.append(f"      {reason}")
    for change in action.field_changes:
        lines.append(f"      ~ {change.path}: {describe_change(change)}")
    for announcement in action.announcements:
        lines.append(
            f"      > announce {announcement.id} (interrupt_mode {announcement.interrupt_mode}): "
            f"{_clip(json.dumps(announcement.message, ensure_ascii=False))}"
        )
    if action.not_played:
        lines.append(f"      {not_played_line(action)}")
    return lines


def not_played_line(action: Action) -> str:
    ids = ", ".join(a.id for a in action.not_played)
    return f"> not played: {ids} (the restart starts a new conversation)"


@dataclass(slots=True)
class SpecLinesMemo:
    """What one rendering remembers across its creates: the lines of each subtree several specs
    share, at its pointer, and each leaf's line by its place, type and value: a merged object
    (defaults under one session's overrides) is that session's own, but most of its leaves are
    the same in every session. `indent` starts each line (the lines are remembered with it)."""

    indent: str = ""
    subtrees: dict[tuple[int, str, bool, int], list[str]] = field(default_factory=dict)
    leaves: dict[tuple[Any, ...], str] = field(default_factory=dict)
    # The subtrees last seen at each place (pointer, flag, paths), a bounded number of them:
    # a subtree's lines are kept on its second sight, so one session's own nodes cost nothing.
    seen: dict[tuple[str, bool, int], dict[int, None]] = field(default_factory=dict)


def spec_lines(
    action: Action, sensitive: Mapping[str, SensitivePaths], memo: SpecLinesMemo | None = None
) -> list[str]:
    """What a create will send, one `+ /Path: value` line per leaf: sensitive literals as
    "(sensitive)", references as written (they name where a secret lives, not what it is).
    Only creates: a replace already lists what changes, and the rest is what is running.

    `memo` (one per rendering, shared by its actions): the lines of a subtree that several
    specs share (what file `defaults` leave untouched is one object in every session's spec),
    at the same pointer, are made once. The subtrees stay alive in the plan while it renders."""
    if action.kind is not ActionKind.CREATE or action.desired is None:
        return []
    paths = sensitive.get(action.provider, frozenset())
    walk = _SpecWalk(paths, SpecLinesMemo() if memo is None else memo)
    walk.node(action.desired.spec, (), "", False)
    return walk.lines


class _SpecWalk:
    """One spec's walk for `spec_lines`. A class rather than a closure that calls itself: such
    a closure is a reference cycle, and plans render while the cyclic collector is paused
    (collector.py), so every create's lines would stay alive until the command ends."""

    __slots__ = ("lines", "marked", "memo", "paths")

    def __init__(self, paths: SensitivePaths, memo: SpecLinesMemo) -> None:
        self.paths = paths
        self.marked = sensitive_keys(paths)
        self.lines: list[str] = []
        self.memo = memo

    def node(self, node: Any, path: tuple[str, ...], pointer: str, secret: bool) -> None:
        lines, memo = self.lines, self.memo
        if isinstance(node, dict) and node:
            key_of = (id(node), pointer, secret, id(self.paths))
            done = memo.subtrees.get(key_of)
            if done is not None:
                lines.extend(done)
                return
            start = len(lines)
            keys = self.marked.get(path, _NO_KEYS)
            leaves = memo.leaves
            for key, value in node.items():
                inner = secret or key in keys
                kind = type(value)
                if kind is dict or kind is list:
                    self.node(value, (*path, key), f"{pointer}/{escape_token(key)}", inner)
                elif inner and value is not None and not is_reference(value):
                    lines.append(f"{memo.indent}+ {pointer}/{escape_token(key)}: {MASK}")
                # A leaf, without a call: most of a spec's nodes are leaves, and most of their
                # lines are remembered (see _leaf_line).
                elif kind is str or kind is int or kind is bool or (kind is float and value):
                    line = leaves.get((pointer, key, kind, value))
                    lines.append(line or _leaf_line(memo.indent, pointer, key, value, leaves))
                else:
                    lines.append(_leaf_line(memo.indent, pointer, key, value, leaves))
            seen = memo.seen.setdefault((pointer, secret, id(self.paths)), {})
            if id(node) in seen:
                memo.subtrees[key_of] = lines[start:]
            else:
                seen[id(node)] = None
                if len(seen) > _SEEN_PER_PLACE:
                    del seen[next(iter(seen))]
        elif isinstance(node, list) and node:
            child_path = (*path, "*")
            inner = secret or child_path in self.paths
            for index, value in enumerate(node):
                self.node(value, child_path, f"{pointer}/{index}", inner)
        elif secret and node is not None and not is_reference(node):
            lines.append(f"{memo.indent}+ {pointer}: {MASK}")
        else:
            lines.append(_leaf_line(memo.indent, pointer, None, node, memo.leaves))


def describe_change(change: FieldChange) -> str:
    if change.sensitive:
        return "(sensitive value changed)"
    before, after = display_value(change.before), display_value(change.after)
    if change.before is None:
        return f"(added) {_compact(after)}"
    if change.after is None:
        return f"{_compact(before)} (removed)"
    return f"{_compact(before)} → {_compact(after)}"


_LEAF_LINES_KEPT = 4096
# How many subtrees a rendering remembers having seen at each place: a file's defaults recur in
# each of its sessions, so up to this many files' sessions may be interleaved (sorted by name).
_SEEN_PER_PLACE = 64
_NO_KEYS: frozenset[str] = frozenset()


def _leaf_line(
    indent: str, pointer: str, key: str | None, value: Any, known: dict[tuple[Any, ...], str]
) -> str:
    """The line of a leaf: an object's member `key` at `pointer`, or (key None) the item at
    `pointer` itself. Remembered by place, type and value, so a remembered line costs neither
    the leaf's pointer nor its value's text."""
    kind = type(value)
    # (-0.0 equals 0.0 as a key, but prints differently: floats of zero are not kept.)
    remembered = kind is str or kind is int or kind is bool or (kind is float and value != 0.0)
    memo_key = (pointer, key, kind, value) if remembered else None
    line = known.get(memo_key) if memo_key is not None else None
    if line is None:
        where = pointer if key is None else f"{pointer}/{escape_token(key)}"
        line = f"{indent}+ {where}: {_compact(value)}"
        # Bounded: the leaves that recur are met in the first sessions already; the many
        # that each session alone holds (its RoomId) must not fill the memory.
        if memo_key is not None and len(known) < _LEAF_LINES_KEPT:
            known[memo_key] = line
    return line


def _compact(value: Any) -> str:
    kind = type(value)
    # (-0.0 equals 0.0 as a key, but prints differently: floats of zero are not kept.)
    if kind is str or kind is int or kind is bool or (kind is float and value != 0.0):
        key = (kind, value)
        found = _COMPACT.get(key)
        if found is None:
            found = _COMPACT[key] = _clip(json.dumps(value, ensure_ascii=False))
            if len(_COMPACT) > _COMPACT_KEPT:
                _COMPACT.clear()
        return found
    return _clip(json.dumps(value, ensure_ascii=False, sort_keys=True))


# A leaf's text, once per distinct (type, value): most leaves repeat across sessions.
_COMPACT: dict[tuple[type, Any], str] = {}
# Bounded (cleared when full): the values that recur are made again within a few sessions of
# a clear, and those each session alone holds (its RoomId, its greeting) must not fill the
# memory: 65,536 entries were ~7 MB of a 10,000-create plan's peak, and a daemon lives on.
_COMPACT_KEPT = 4096


def _clip(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def display_value(value: Any) -> Any:
    """A redacted value fit for output: hash markers become "(sensitive)"."""
    if isinstance(value, dict):
        return {key: display_value(item) for key, item in value.items()}
    if isinstance(value, list):
        return [display_value(item) for item in value]
    if is_marker(value):
        reference = str(value)[len("<sensitive ") :].rsplit(" hmac:", 1)[0]
        return reference if is_reference(reference) else MASK
    return value


def masked_spec(spec: Any, paths: SensitivePaths) -> Any:
    """A declared spec fit for output: sensitive literals masked, references kept as written.
    Shares every subtree without a sensitive field with `spec` (a copy only along the paths)."""
    return marked_along(spec, sensitive_trie(paths), False, _masked_leaf)


def _masked_leaf(value: Any) -> Any:
    return value if is_reference(value) else MASK


def plan_document(plan: Plan, sensitive: Mapping[str, SensitivePaths]) -> dict[str, Any]:
    """The plan as the JSON document described by schemas/plan.schema.json."""
    summary = plan.summary
    return {
        "kind": PLAN_KIND,
        "format_version": PLAN_FORMAT_VERSION,
        "lineage": plan.lineage,
        "serial": plan.serial,
        "created_at": plan.created_at,
        "max_stops": plan.max_stops,
        "summary": {
            "create": summary.create,
            "delete": summary.delete,
            "replace": summary.replace,
            "update": summary.update,
            "keep": summary.keep,
            "noop": summary.noop,
            "outside_selection": plan.outside_selection,
            "cuts_conversations": summary.replace,
            "text": summary_line(plan),
        },
        "violations": list(plan.violations),
        "notes": list(plan.notes),
        "actions": [_action_document(action, sensitive) for action in plan.actions],
    }


def _action_document(action: Action, sensitive: Mapping[str, SensitivePaths]) -> dict[str, Any]:
    document: dict[str, Any] = {
        "kind": action.kind.value,
        "name": action.name,
        "provider": action.provider,
        "identity": action.identity,
        "reason": action.reason,
        "cuts_conversation": action.cuts_conversation,
    }
    if action.kind in UNCHANGING:
        return document
    document["previous_identity"] = action.previous_identity
    document["changed_paths"] = list(action.changed_paths)
    document["sensitive_paths"] = list(action.sensitive_paths)
    document["field_changes"] = [
        {
            "path": change.path,
            "before": None if change.sensitive else display_value(change.before),
            "after": None if change.sensitive else display_value(change.after),
            "sensitive": change.sensitive,
        }
        for change in action.field_changes
    ]
    document["announcements"] = [
        {"id": a.id, "message": a.message, "interrupt_mode": a.interrupt_mode}
        for a in action.announcements
    ]
    document["in_place_paths"] = list(action.in_place_paths)
    document["not_played"] = [
        {"id": a.id, "message": a.message, "interrupt_mode": a.interrupt_mode}
        for a in action.not_played
    ]
    document["desired"] = (
        desired_document(action.desired, sensitive.get(action.provider, frozenset()))
        if action.desired is not None
        else None
    )
    return document


def desired_document(session: DesiredSession, paths: SensitivePaths) -> dict[str, Any]:
    return {
        "name": session.name,
        "provider": session.provider,
        "protect": session.protect,
        "labels": dict(session.labels),
        "spec": masked_spec(session.spec, paths),
        "announcements": [
            {"id": a.id, "message": a.message, "interrupt_mode": a.interrupt_mode}
            for a in session.announcements
        ],
        "passthrough": list(session.passthrough),
        "source": {"file": session.source.file, "pointer": session.source.pointer},
    }


def render_json(plan: Plan, sensitive: Mapping[str, SensitivePaths]) -> str:
    return indented_json(plan_document(plan, sensitive)) + "\n"


def record_document(record: SessionRecord) -> dict[str, Any]:
    return {
        "name": record.name,
        "provider": record.provider,
        "identity": record.identity,
        "status": record.status.value,
        "protect": record.protect,
        "labels": dict(record.labels),
        "provider_ids": dict(record.provider_ids),
        "fingerprint": record.fingerprint,
        "announcements_delivered": list(record.announcements_delivered),
        "spec": display_value(json.loads(record.spec_json)),
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "last_error": record.last_error,
        "source": record.source,
        "attempt": record.attempt,
        "observed": observation_document(record.observation),
    }


def observation_document(observation: Observation | None) -> dict[str, Any] | None:
    if observation is None:
        return None
    return {
        "liveness": observation.liveness.value,
        "status": observation.status or "unknown",
        "observed_at": observation.observed_at,
        "ended_at": observation.ended_at,
        "reason": observation.reason,
    }


def observed_status(record: SessionRecord) -> str:
    """The cloud's word for the session (Created / Executing / Finished / unknown) when it was
    observed; otherwise what the record believes."""
    if record.observation is None:
        return record.status.value
    return record.observation.status or "unknown"


def render_records(records: Sequence[SessionRecord]) -> str:
    if not records:
        return "No sessions recorded.\n"
    rows = [
        ("NAME", "PROVIDER", "IDENTITY", "STATUS", "OBSERVED", "PROTECT", "UPDATED", "LAST ERROR")
    ]
    for record in records:
        rows.append(
            (
                record.name,
                record.provider,
                record.identity,
                observed_status(record),
                record.observation.observed_at if record.observation else "-",
                "yes" if record.protect else "",
                record.updated_at,
                _clip(record.last_error or "", 60),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        + "\n"
        for row in rows
    )
