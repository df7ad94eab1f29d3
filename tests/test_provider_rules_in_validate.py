"""Rules of one provider reach `validate` and `plan` through that provider's ProviderRules, and
stay there: an announcement's length limit, the duplicate-identity wording, and Volcengine's
"agent user must differ from the target" rule.

Real parts only: the CLI in this process, the emulator on 127.0.0.1 serving both clouds, a SQLite
state. `plan` refuses before it calls anything, so no session is started.
"""

from __future__ import annotations

from typing import Any

from apply_helpers import Workspace, aliyun_session, session

from reconciler.providers.registry import PROVIDERS


def spoken(length: int) -> list[dict[str, Any]]:
    return [{"id": "long-1", "message": "x" * length}]


def test_an_aliyun_announcement_over_1024_characters_is_refused_by_validate_and_plan(
    ws: Workspace,
) -> None:
    manifest = ws.declare([aliyun_session("fd", announcements=spoken(1025))])

    for command in ("validate", "plan"):
        result = ws.run_here(command, str(ws.manifests))
        assert result.code == 1, str(result)
        assert (
            f"{manifest}: /sessions/0/announcements/0/message: " in result.err
            and "is too long (at most 1024 characters" in result.err
        ), str(result)
    assert not ws.state.exists()  # refused before anything was opened or called


def test_an_aliyun_announcement_may_be_longer_than_volcengines_limit(ws: Workspace) -> None:
    # 1024 is SendAIAgentSpeech's limit; the 200 of UpdateVoiceChat is Volcengine's alone.
    ws.declare([aliyun_session("fd", announcements=spoken(1024))])
    result = ws.run_here("validate", str(ws.manifests))
    assert result.code == 0, str(result)


def test_a_volcengine_announcement_keeps_its_200_character_limit(ws: Workspace) -> None:
    ws.declare(
        [session("ok", announcements=spoken(200)), session("long", announcements=spoken(201))]
    )
    result = ws.run_here("validate", str(ws.manifests))
    assert result.code == 1, str(result)
    problems = [line for line in result.err.splitlines() if "/announcements/" in line]
    assert len(problems) == 1, str(result)
    assert "/sessions/1/announcements/0/message: " in problems[0]
    assert "is too long (at most 200 characters" in problems[0]


def test_the_limits_live_in_each_providers_rules() -> None:
    limits = {name: spec.rules.max_announcement_chars for name, spec in PROVIDERS.items()}
    assert limits == {"volcengine": 200, "aliyun": 1024}


def test_a_duplicate_identity_is_named_in_the_providers_words(ws: Workspace) -> None:
    first = aliyun_session("fd-1", channel="ch-shared")
    second = aliyun_session("fd-2", channel="ch-shared")
    second["spec"]["RuntimeConfig"]["AgentUserId"] = first["spec"]["RuntimeConfig"]["AgentUserId"]
    ws.declare([first, second, session("v-1"), {**session("v-1"), "name": "v-2"}])

    result = ws.run_here("validate", str(ws.manifests))

    assert result.code == 1, str(result)
    identity = "39f8e0bc005e4f309379701645f4a1b2/ch-shared/agent-fd-1"
    assert (
        f"/sessions/1/spec: duplicate instance AIAgentId/ChannelId/AgentUserId {identity}: "
        'session "fd-1"' in result.err
    ), str(result)
    assert "/sessions/3/spec: duplicate task AppId/RoomId/TaskId " in result.err, str(result)
    assert "duplicate task 39f8e0bc" not in result.err


def test_the_target_user_rule_is_volcengines_only(ws: Workspace) -> None:
    # An aliyun spec carrying Volcengine-shaped fields (sent as-is through passthrough) is not
    # held to Volcengine's rule; a Volcengine spec still is.
    agent = aliyun_session("fd")
    agent["spec"]["AgentConfig"].update({"UserId": "same", "TargetUserId": ["same"]})
    agent["passthrough"] = ["/AgentConfig/UserId", "/AgentConfig/TargetUserId"]
    volc = session("v-1")
    volc["spec"]["AgentConfig"]["TargetUserId"] = [volc["spec"]["AgentConfig"]["UserId"]]
    ws.declare([agent, volc])

    result = ws.run_here("validate", str(ws.manifests))

    assert result.code == 1, str(result)
    problems = [line for line in result.err.splitlines() if "must differ" in line]
    assert len(problems) == 1, str(result)
    assert "/sessions/1/spec/AgentConfig/UserId: the agent UserId" in problems[0]
