"""The pull-request comment: counts first, actions, collapsible details, never over the limit."""

from __future__ import annotations

from typing import Any

from reconciler.core.model import DesiredSession, StateMeta
from reconciler.core.outcome import action_outcome
from reconciler.core.plan import Guards, make_plan
from reconciler.core.render_markdown import GITHUB_COMMENT_LIMIT, render_markdown
from reconciler.providers.registry import provider_rules

KEY = b"k" * 32
META = StateMeta("lineage", 1, KEY)
SENSITIVE = {"volcengine": frozenset({("Config", "LLMConfig", "APIKey")})}
APP = "661e4b8f2f1d3c0123456789"

RULES = provider_rules()


def session(index: int, temperature: float = 0.5, message: str = "hello") -> DesiredSession:
    spec: dict[str, Any] = {
        "AppId": APP,
        "RoomId": f"room-{index}",
        "TaskId": f"task-{index}",
        "Config": {"LLMConfig": {"Temperature": temperature, "APIKey": "${env:K}"}},
        "AgentConfig": {"WelcomeMessage": message},
    }
    return DesiredSession(
        name=f"session-{index:05d}",
        provider="volcengine",
        identity=f"{APP}/room-{index}/task-{index}",
        spec=spec,
    )


def test_small_plan_shows_counts_actions_and_details() -> None:
    records = [
        r
        for a in make_plan([session(1), session(2)], [], META, SENSITIVE, {}, rules=RULES).actions
        if (r := action_outcome(a, KEY, SENSITIVE, {}, "t", rules=RULES)) is not None
    ]
    plan = make_plan(
        [session(1, temperature=0.9), session(3)], records, META, SENSITIVE, {}, rules=RULES
    )
    text = render_markdown(plan, SENSITIVE, artifact="plan.json")
    assert text.index("| start | 1 |") < text.index("#### Actions") < text.index("#### Details")
    assert "| restart (cuts the live conversation) | 1 |" in text
    assert "| stop | 1 |" in text
    assert "**cuts the live conversation**" in text
    assert "<details><summary>-/+ replace session-00001</summary>" in text
    assert "~ /Config/LLMConfig/Temperature: 0.5 → 0.9" in text
    assert "not shown" not in text


def test_three_thousand_sessions_fit_the_comment_limit_with_a_pointer_to_the_artifact() -> None:
    sessions = [session(i, message="x" * 150) for i in range(3000)]
    plan = make_plan(sessions, [], META, SENSITIVE, {}, Guards(max_stops=None), rules=RULES)
    text = render_markdown(plan, SENSITIVE, artifact="plan.json")
    assert len(text) <= GITHUB_COMMENT_LIMIT
    assert text.startswith("### reconciler plan — Plan: 3000 to start.")
    assert "| start | 3000 |" in text
    assert "more actions not shown" in text and "`plan.json`" in text


def test_details_are_dropped_before_actions_when_only_details_overflow() -> None:
    sessions = [session(i) for i in range(40)]
    plan = make_plan(sessions, [], META, SENSITIVE, {}, rules=RULES)
    full = render_markdown(plan, SENSITIVE)
    limit = full.index("#### Details") + 800
    text = render_markdown(plan, SENSITIVE, limit=limit)
    assert len(text) <= limit
    assert text.count("**create**") == 40
    assert "more action details not shown" in text
    assert "`reconciler plan --format json`" in text


def test_backticks_in_values_cannot_break_out_of_the_block() -> None:
    records = [
        r
        for a in make_plan([session(1)], [], META, SENSITIVE, {}, rules=RULES).actions
        if (r := action_outcome(a, KEY, SENSITIVE, {}, "t", rules=RULES)) is not None
    ]
    plan = make_plan(
        [session(1, message="```</details>")], records, META, SENSITIVE, {}, rules=RULES
    )
    text = render_markdown(plan, SENSITIVE)
    assert "````\n" in text
