"""The planner: one action per session, the right kind and reason, guards, determinism."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core.model import Announcement, DesiredSession, SessionRecord, StateMeta
from reconciler.core.outcome import action_outcome
from reconciler.core.plan import ActionKind, Guards, make_plan
from reconciler.core.render import render_json, render_text, summary_line
from reconciler.providers.registry import provider_rules

KEY = b"k" * 32
META = StateMeta("lineage-1", 7, KEY)
SENSITIVE = {"volcengine": frozenset({("Config", "LLMConfig", "APIKey")})}
APP = "661e4b8f2f1d3c0123456789"

RULES = provider_rules()


def spec(task: str, temperature: float = 0.5, api_key: str = "${env:KEY}") -> dict[str, Any]:
    return {
        "AppId": APP,
        "RoomId": "room-1",
        "TaskId": task,
        "Config": {"LLMConfig": {"Mode": "ArkV3", "Temperature": temperature, "APIKey": api_key}},
        "AgentConfig": {"TargetUserId": ["user"], "UserId": "bot"},
    }


def session(name: str, **kw: Any) -> DesiredSession:
    task = kw.pop("task", name)
    body = kw.pop("spec", None) or spec(task)
    return DesiredSession(
        name=name,
        provider="volcengine",
        identity=f"{APP}/{body['RoomId']}/{body['TaskId']}",
        spec=body,
        **kw,
    )


def applied(sessions: list[DesiredSession], secrets: dict[str, str]) -> list[SessionRecord]:
    plan = make_plan(sessions, [], META, SENSITIVE, secrets, Guards(max_stops=None), rules=RULES)
    records = [action_outcome(a, KEY, SENSITIVE, secrets, "t0", rules=RULES) for a in plan.actions]
    return [r for r in records if r is not None]


def test_creates_deletes_and_noops_in_name_order() -> None:
    secrets = {"${env:KEY}": "s1"}
    records = applied([session("b"), session("c")], secrets)
    plan = make_plan([session("a"), session("b")], records, META, SENSITIVE, secrets, rules=RULES)
    kinds = [(a.name, a.kind) for a in plan.actions]
    assert kinds == [("a", ActionKind.CREATE), ("b", ActionKind.NOOP), ("c", ActionKind.DELETE)]
    assert plan.lineage == "lineage-1" and plan.serial == 7
    assert summary_line(plan) == "Plan: 1 to start, 1 to stop."


def test_config_change_is_a_replace_that_cuts_the_conversation() -> None:
    secrets = {"${env:KEY}": "s1"}
    records = applied([session("a")], secrets)
    changed = session("a", spec=spec("a", temperature=0.9))
    plan = make_plan([changed], records, META, SENSITIVE, secrets, rules=RULES)
    (action,) = plan.changes
    assert action.kind is ActionKind.REPLACE and action.cuts_conversation
    assert action.changed_paths == ("/Config/LLMConfig/Temperature",)
    assert action.field_changes[0].before == 0.5 and action.field_changes[0].after == 0.9
    assert "restart" in summary_line(plan) and "cuts 1 live conversation" in summary_line(plan)
    assert "cuts the live conversation" in render_text(plan, SENSITIVE)


def test_rotated_secret_is_a_sensitive_change_and_never_shown() -> None:
    records = applied([session("a")], {"${env:KEY}": "old-secret-value"})
    plan = make_plan(
        [session("a")], records, META, SENSITIVE, {"${env:KEY}": "new-secret-value"}, rules=RULES
    )
    (action,) = plan.changes
    assert action.kind is ActionKind.REPLACE
    assert action.sensitive_paths == ("/Config/LLMConfig/APIKey",)
    assert action.reason.startswith("sensitive value changed")
    for output in (render_text(plan, SENSITIVE), render_json(plan, SENSITIVE)):
        assert "old-secret-value" not in output and "new-secret-value" not in output
        assert "sensitive value changed" in output


def test_unresolvable_reference_compares_by_name() -> None:
    records = applied([session("a")], {"${env:KEY}": "secret"})
    plan = make_plan([session("a")], records, META, SENSITIVE, {}, rules=RULES)
    assert not plan.changes
    assert plan.notes and "${env:KEY}" in plan.notes[0]
    renamed = session("a", spec=spec("a", api_key="${env:OTHER}"))
    plan = make_plan([renamed], records, META, SENSITIVE, {}, rules=RULES)
    assert [a.kind for a in plan.changes] == [ActionKind.REPLACE]


def test_literal_sensitive_value_is_masked_in_outputs() -> None:
    records = applied([session("a", spec=spec("a", api_key="literal-key-1"))], {})
    plan = make_plan(
        [session("a", spec=spec("a", api_key="literal-key-2"))],
        records,
        META,
        SENSITIVE,
        {},
        rules=RULES,
    )
    assert plan.changes[0].sensitive_paths == ("/Config/LLMConfig/APIKey",)
    for output in (render_text(plan, SENSITIVE), render_json(plan, SENSITIVE)):
        assert "literal-key" not in output


def test_identity_change_is_a_replace_naming_the_old_task() -> None:
    secrets = {"${env:KEY}": "s"}
    records = applied([session("a", task="t1")], secrets)
    plan = make_plan([session("a", task="t2")], records, META, SENSITIVE, secrets, rules=RULES)
    (action,) = plan.changes
    assert action.kind is ActionKind.REPLACE
    assert action.previous_identity == f"{APP}/room-1/t1"


def test_new_announcement_is_an_update_and_labels_only_touch_the_record() -> None:
    secrets = {"${env:KEY}": "s"}
    first = Announcement("a1", "hello", 1)
    records = applied([session("a", announcements=(first,))], secrets)
    assert records[0].announcements_delivered == ("a1",)  # baseline at start: not played
    second = Announcement("a2", "maintenance at ten", 2)
    plan = make_plan(
        [session("a", announcements=(first, second), labels={"team": "x"})],
        records,
        META,
        SENSITIVE,
        secrets,
        rules=RULES,
    )
    (action,) = plan.changes
    assert action.kind is ActionKind.UPDATE and not action.record_only
    assert action.announcements == (second,)
    assert "labels changed (record only)" in action.reason
    plan = make_plan(
        [session("a", announcements=(first,), protect=True)],
        records,
        META,
        SENSITIVE,
        secrets,
        rules=RULES,
    )
    assert plan.changes[0].record_only


def test_guards() -> None:
    secrets = {"${env:KEY}": "s"}
    records = applied([session(f"s{i}") for i in range(5)], secrets)
    empty = make_plan([], records, META, SENSITIVE, secrets, rules=RULES)
    assert empty.violations and "--allow-empty" in empty.violations[0]
    allowed = make_plan(
        [], records, META, SENSITIVE, secrets, Guards(allow_empty=True, max_stops=5), rules=RULES
    )
    assert not allowed.violations
    budget = make_plan(
        [], records, META, SENSITIVE, secrets, Guards(allow_empty=True, max_stops=4), rules=RULES
    )
    assert budget.violations and "--max-stops 5" in budget.violations[0]
    protected = [replace(records[0], protect=True), *records[1:]]
    keep = [session(f"s{i}") for i in range(1, 5)]
    plan = make_plan(keep, protected, META, SENSITIVE, secrets, rules=RULES)
    # A protected session no longer declared is kept running, and blocks nothing.
    assert not plan.violations
    kept = [a for a in plan.actions if a.name == "s0"]
    assert [(a.kind, a.reason) for a in kept] == [
        (ActionKind.KEEP, "kept: protected (no longer declared)")
    ]
    assert not plan.changes
    restart = [session("s0", spec=spec("s0", temperature=0.1), protect=True), *keep]
    plan = make_plan(restart, protected, META, SENSITIVE, secrets, rules=RULES)
    assert any("refusing to restart" in v for v in plan.violations)


def test_plan_is_deterministic() -> None:
    secrets = {"${env:KEY}": "s"}
    sessions = [session(n) for n in ("z", "m", "a")]
    one = render_json(make_plan(sessions, [], META, SENSITIVE, secrets, rules=RULES), SENSITIVE)
    two = render_json(
        make_plan(list(reversed(sessions)), [], META, SENSITIVE, secrets, rules=RULES), SENSITIVE
    )
    assert one == two


names = st.sampled_from([f"s{i}" for i in range(8)])
desired_sessions = st.builds(
    lambda name, temperature, key, labels, protect, ann: session(
        name,
        spec=spec(name, temperature=temperature, api_key=key),
        labels=labels,
        protect=protect,
        announcements=tuple(Announcement(a, "m", 2) for a in sorted(ann)),
    ),
    names,
    st.sampled_from([0.1, 0.5, 0.9]),
    st.sampled_from(["${env:KEY}", "${env:OTHER}", "literal"]),
    st.dictionaries(st.sampled_from(["team", "tier"]), st.sampled_from(["a", "b"]), max_size=2),
    st.booleans(),
    st.sets(st.sampled_from(["n1", "n2", "n3"]), max_size=3),
)
desired_sets = st.lists(desired_sessions, max_size=6, unique_by=lambda s: s.name)
secret_values = st.fixed_dictionaries(
    {}, optional={"${env:KEY}": st.sampled_from(["k1", "k2"]), "${env:OTHER}": st.just("o")}
)


@settings(max_examples=300, deadline=None)
@given(desired_sets, desired_sets, secret_values, secret_values)
def test_after_recording_a_plan_planning_again_yields_only_noops(
    before: list[DesiredSession],
    after: list[DesiredSession],
    first_secrets: dict[str, str],
    second_secrets: dict[str, str],
) -> None:
    records = applied(before, first_secrets)
    guards = Guards(allow_empty=True, max_stops=None)
    plan = make_plan(after, records, META, SENSITIVE, second_secrets, guards, rules=RULES)
    outcome = [
        action_outcome(a, KEY, SENSITIVE, second_secrets, "t1", rules=RULES) for a in plan.actions
    ]
    recorded = [record for record in outcome if record is not None]
    again = make_plan(after, recorded, META, SENSITIVE, second_secrets, guards, rules=RULES)
    assert not again.changes, [(a.name, a.kind, a.reason) for a in again.changes]
    # Protected sessions no longer declared are kept running (and stay recorded).
    declared = {session.name for session in after}
    kept = {r.name for r in records if r.protect and r.name not in declared}
    assert {action.name for action in again.kept} == kept
    assert len(again.actions) == len(after) + len(kept)
