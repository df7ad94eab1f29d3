"""In-place updates: a config change only under a provider's in-place fields is an `update` that
calls the provider and moves the record's spec and fingerprint, so the next plan is all no-ops;
labels/protect alone stay record-only. The property "record the outcome, plan again: all
no-ops" holds for every provider's rules, in-place fields (nested pointers) included."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core.model import (
    Announcement,
    DesiredSession,
    Liveness,
    LiveSession,
    Observation,
    Owner,
    SessionRecord,
    StateMeta,
)
from reconciler.core.normalize import SensitivePaths
from reconciler.core.outcome import action_outcome
from reconciler.core.plan import ActionKind, Guards, Plan, PlanMemo, make_plan
from reconciler.core.providers import ProviderRules
from reconciler.core.render import plan_document
from reconciler.core.saved import parse_saved_plan, plan_from_saved
from reconciler.core.secrets import split_pointer
from reconciler.providers.aliyun.rules import RULES as ALIYUN
from reconciler.providers.registry import provider_rules

KEY = b"k" * 32
META = StateMeta("lineage-1", 7, KEY)
# Volcengine's rules, as a provider that could change its temperature in place would declare
# them: nested in-place pointers next to Volcengine's flat identity.
TUNABLE = ProviderRules(
    name="tunable",
    identity_fields=("/AppId", "/RoomId", "/TaskId"),
    in_place_prefixes=("/Config/LLMConfig/Temperature", "/AgentConfig/Greeting"),
    noun="task",
)
EVERY_RULES: dict[str, ProviderRules] = {**provider_rules(), "aliyun": ALIYUN, "tunable": TUNABLE}
SENSITIVE: dict[str, SensitivePaths] = {name: frozenset({("Secret",)}) for name in EVERY_RULES}


def put(spec: dict[str, Any], pointer: str, value: Any) -> None:
    *parents, last = split_pointer(pointer)
    node = spec
    for token in parents:
        node = node.setdefault(token, {})
    node[last] = value


def declared(
    rules: ProviderRules, name: str, values: Mapping[str, Any], **kw: Any
) -> DesiredSession:
    spec: dict[str, Any] = {}
    for pointer in rules.identity_fields:
        put(spec, pointer, f"{name}-{split_pointer(pointer)[-1]}")
    for pointer, value in values.items():
        put(spec, pointer, value)
    return DesiredSession(name, rules.name, rules.identity(spec), spec, **kw)


def plan(desired: list[DesiredSession], records: list[SessionRecord]) -> Plan:
    guards = Guards(allow_empty=True, max_stops=None)
    return make_plan(desired, records, META, SENSITIVE, {}, guards, rules=EVERY_RULES)


def outcome(result: Plan) -> list[SessionRecord]:
    after = (action_outcome(a, KEY, SENSITIVE, {}, "t", rules=EVERY_RULES) for a in result.actions)
    return [record for record in after if record is not None]


def test_a_change_under_in_place_fields_is_an_update_that_moves_the_record() -> None:
    before = declared(
        ALIYUN, "a", {"/AgentConfig/TtsConfig/VoiceId": "v1", "/AgentConfig/Volume": 100}
    )
    records = outcome(plan([before], []))
    after = declared(
        ALIYUN, "a", {"/AgentConfig/TtsConfig/VoiceId": "v2", "/AgentConfig/Volume": 100}
    )
    (action,) = plan([after], records).changes
    assert action.kind is ActionKind.UPDATE and not action.cuts_conversation
    assert action.in_place_paths == ("/AgentConfig/TtsConfig/VoiceId",)
    assert not action.record_only  # the provider must be called
    assert "updated in place" in action.reason
    (moved,) = outcome(plan([after], records))
    assert moved.fingerprint != records[0].fingerprint
    assert '"v2"' in moved.spec_json
    assert not plan([after], [moved]).changes


def test_labels_alone_stay_record_only() -> None:
    spec = {"/AgentConfig/Greeting": "hi"}
    records = outcome(plan([declared(ALIYUN, "a", spec)], []))
    (action,) = plan([declared(ALIYUN, "a", spec, labels={"team": "x"})], records).changes
    assert action.kind is ActionKind.UPDATE and action.record_only
    assert action.in_place_paths == () and "(record only)" in action.reason


def test_an_in_place_update_carries_new_announcements_and_labels() -> None:
    records = outcome(plan([declared(TUNABLE, "a", {"/Config/LLMConfig/Temperature": 0.1})], []))
    notice = Announcement("n1", "maintenance at noon")
    after = declared(
        TUNABLE,
        "a",
        {"/Config/LLMConfig/Temperature": 0.9},
        labels={"tier": "gold"},
        announcements=(notice,),
    )
    (action,) = plan([after], records).changes
    assert action.kind is ActionKind.UPDATE
    assert action.in_place_paths == ("/Config/LLMConfig/Temperature",)
    assert action.announcements == (notice,)
    assert action.changed_paths == ("/Config/LLMConfig/Temperature", "/labels")
    assert not plan([after], outcome(plan([after], records))).changes


def test_any_change_outside_the_in_place_fields_is_a_restart() -> None:
    records = outcome(
        plan([declared(ALIYUN, "a", {"/AgentConfig/Greeting": "hi", "/SessionId": "s1"})], [])
    )
    after = declared(ALIYUN, "a", {"/AgentConfig/Greeting": "hello", "/SessionId": "s2"})
    (action,) = plan([after], records).changes
    assert action.kind is ActionKind.REPLACE and action.in_place_paths == ()
    assert "cannot change /SessionId in place" in action.reason


def test_a_saved_in_place_update_applies_as_reviewed() -> None:
    records = outcome(plan([declared(ALIYUN, "a", {"/AgentConfig/Volume": 10})], []))
    made = plan([declared(ALIYUN, "a", {"/AgentConfig/Volume": 20})], records)
    saved = parse_saved_plan(plan_document(made, SENSITIVE), "p.plan")
    (action,) = plan_from_saved(saved, records, "p.plan", EVERY_RULES).changes
    assert action.in_place_paths == ("/AgentConfig/Volume",) and not action.record_only


def test_a_session_that_ended_by_itself_is_started_again_saying_when_and_why() -> None:
    session = declared(ALIYUN, "a", {"/AgentConfig/Greeting": "hi"}, protect=True)
    (record,) = outcome(plan([session], []))
    ended = replace(record, observation=ENDED)
    (action,) = plan([session], [ended]).changes
    assert action.kind is ActionKind.CREATE and action.recorded == ended
    assert action.reason == (
        "ended by itself (the user hung up, at t1, observed t2); started again"
    )
    # No longer declared: nothing runs to keep, even protected; its Stop only confirms it.
    (gone,) = plan([], [ended]).changes
    assert gone.kind is ActionKind.DELETE and "it had ended by itself" in gone.reason


def test_live_sessions_with_our_tag_that_no_record_tracks_are_noted() -> None:
    (record,) = outcome(plan([declared(ALIYUN, "a", {})], []))
    record = replace(record, attempt="att-1")
    ids = {"AIAgentId": "a-AIAgentId", "ChannelId": "a-ChannelId", "AgentUserId": "a-AgentUserId"}
    live = [
        LiveSession(ids, Owner(META.lineage, "a", "att-1"), "Executing"),  # the record's own
        LiveSession(ids, Owner(META.lineage, "a", "att-0"), "Executing"),  # a lost Start's
        LiveSession(ids, Owner("another-state", "a", "x"), "Executing"),  # not ours
        LiveSession(ids, None, "Executing"),  # untagged
    ]
    made = make_plan([], [record], META, SENSITIVE, {}, rules=EVERY_RULES, live=live)
    untracked = [note for note in made.notes if note.startswith("untracked")]
    assert untracked == [
        'untracked live session with this state\'s tag: "a" (attempt att-0) runs as '
        "a-AIAgentId/a-ChannelId/a-AgentUserId but no record tracks it; a restart into the "
        "same channel replaces it"
    ]


# -- the property, for every provider's rules ------------------------------------------------------

ENDED = Observation(Liveness.ENDED, "Finished", "t2", "t1", "the user hung up")
VALUES = st.sampled_from([0, 1, "a", "b", True, {"k": "v"}])


@st.composite
def desired_sets(draw: st.DrawFn, rules: ProviderRules) -> list[DesiredSession]:
    names = draw(st.lists(st.sampled_from([f"s{i}" for i in range(6)]), unique=True, max_size=5))
    sessions = []
    for name in names:
        values: dict[str, Any] = {
            pointer: draw(VALUES)
            for pointer in draw(st.sets(st.sampled_from(rules.in_place_prefixes or ("/Fixed",))))
        }
        values["/Fixed"] = draw(st.sampled_from(["x", "y"]))
        values["/Secret"] = draw(st.sampled_from(["${env:KEY}", "literal-1", "literal-2"]))
        moved = draw(st.booleans())  # another identity: a restart
        sessions.append(
            declared(
                rules,
                name + ("-moved" if moved else ""),
                values,
                labels=draw(
                    st.dictionaries(st.sampled_from(["team"]), st.sampled_from(["a", "b"]))
                ),
                protect=draw(st.booleans()),
                announcements=tuple(
                    Announcement(i, "m")
                    for i in sorted(draw(st.sets(st.sampled_from(["n1", "n2"]))))
                ),
            )
        )
    # The session's name stays; only its identity moves.
    return [
        DesiredSession(
            s.name.removesuffix("-moved"),
            s.provider,
            s.identity,
            s.spec,
            s.labels,
            s.protect,
            s.announcements,
        )
        for s in sessions
    ]


@pytest.mark.parametrize("rules", list(EVERY_RULES.values()), ids=list(EVERY_RULES))
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_record_the_outcome_and_plan_again_all_no_ops(
    rules: ProviderRules, data: st.DataObject
) -> None:
    before = data.draw(desired_sets(rules))
    after = data.draw(desired_sets(rules))
    first = outcome(plan(before, []))
    # Some sessions ended by themselves since (observed before this plan).
    first = [
        replace(record, observation=ENDED) if data.draw(st.booleans()) else record
        for record in first
    ]
    second = plan(after, first)
    assert not plan(after, outcome(second)).changes


@pytest.mark.parametrize("rules", list(EVERY_RULES.values()), ids=list(EVERY_RULES))
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_a_remembering_plan_is_the_plan_made_from_scratch(
    rules: ProviderRules, data: st.DataObject
) -> None:
    """The daemon plans with a PlanMemo across passes: through a sequence of desired sets and
    record sets (some objects kept from pass to pass, as the reader and the record cache keep
    them), each plan is exactly the one made without it."""
    guards = Guards(allow_empty=True, max_stops=None)
    memo = PlanMemo()
    desired: list[DesiredSession] = data.draw(desired_sets(rules))
    records: list[SessionRecord] = []
    for _ in range(data.draw(st.integers(1, 5))):
        fresh = data.draw(desired_sets(rules))
        # Unchanged files hand back the very same session objects.
        kept = {s.name: s for s in desired if data.draw(st.booleans())}
        desired = [kept.get(s.name, s) for s in fresh]
        remembered = make_plan(
            desired, records, META, SENSITIVE, {}, guards, rules=EVERY_RULES, memo=memo
        )
        scratch = make_plan(desired, records, META, SENSITIVE, {}, guards, rules=EVERY_RULES)
        assert remembered == scratch
        applied = outcome(scratch)
        # Unchanged records are the same objects (the cache), others are new.
        by_name = {r.name: r for r in records}
        records = [by_name[r.name] if by_name.get(r.name) == r else r for r in applied]
