"""Alibaba Cloud AI agents through plan and apply, against the real emulator (one port for
both clouds), a real SQLite state and the CLI.

The InstanceId Start returns is recorded with the outcome; an in-place change converges in one
apply without a restart; an instance that finished by itself is planned as a create and healed;
a Start whose answer was lost is settled by starting again into the channel and listing the
session's tag, leaving exactly one live instance; a prune leaves none; one apply can mix both
providers.
"""

from __future__ import annotations

import json
from typing import Any

from apply_helpers import (
    Workspace,
    aliyun_session,
    live_instances,
    running,
    session,
)

from reconciler.emulator.faults import Faults


def converge(ws: Workspace, sessions: list[dict[str, Any]]) -> None:
    ws.declare(sessions)
    result = ws.apply()
    assert result.code == 0, str(result)
    assert ws.plan_exit().code == 0, str(ws.plan_exit())


def record(ws: Workspace, name: str) -> dict[str, Any]:
    (found,) = [r for r in ws.records() if r["name"] == name]
    return found


def tag(instance: dict[str, Any]) -> dict[str, str]:
    owner: dict[str, str] = json.loads(instance["UserData"])["reconciler"]
    return owner


def test_start_records_the_instance_id_and_its_attempt(ws: Workspace) -> None:
    converge(ws, [aliyun_session("front-desk")])
    (instance,) = live_instances(ws.emulator).values()
    stored = record(ws, "front-desk")
    assert stored["provider_ids"]["InstanceId"] == instance["InstanceId"]
    assert stored["identity"] == f"{instance['AIAgentId']}/ch-front-desk/agent-front-desk"
    assert tag(instance) == {
        "lineage": tag(instance)["lineage"],
        "session": "front-desk",
        "attempt": stored["attempt"],
    }
    assert json.loads(instance["UserData"])["tenant"] == "acme"
    # The second plan asked the cloud (Describe) and found it running.
    assert ws.emulator.aliyun.calls()["by_action"]["DescribeAIAgentInstance"] >= 1


def test_an_in_place_change_converges_in_one_apply_without_a_restart(ws: Workspace) -> None:
    converge(ws, [aliyun_session("desk", voice="zhixiaoxia")])
    (before,) = live_instances(ws.emulator).values()
    ws.declare([aliyun_session("desk", voice="xiaoyun", greeting="Welcome back!")])
    planned = ws.run_here("plan", str(ws.manifests))
    assert "updated in place" in planned.out and "restart" not in planned.out.lower(), planned
    result = ws.apply()
    assert result.code == 0, str(result)
    (after,) = live_instances(ws.emulator).values()
    assert after["InstanceId"] == before["InstanceId"]  # no cut
    assert after["AgentConfig"]["TtsConfig"]["VoiceId"] == "xiaoyun"
    assert after["AgentConfig"]["Greeting"] == "Welcome back!"
    assert after["Updates"], after
    assert ws.plan_exit().code == 0, str(ws.plan_exit())  # the record moved with it
    assert ws.emulator.aliyun.calls()["by_action"].get("StopAIAgentInstance", 0) == 0


def test_a_change_outside_the_in_place_fields_restarts_the_instance(ws: Workspace) -> None:
    converge(ws, [aliyun_session("desk", prompt="You are the front desk.")])
    (before,) = live_instances(ws.emulator).values()
    converge(ws, [aliyun_session("desk", prompt="You are the concierge.")])
    (after,) = live_instances(ws.emulator).values()
    assert after["InstanceId"] != before["InstanceId"]
    assert record(ws, "desk")["provider_ids"]["InstanceId"] == after["InstanceId"]


def test_an_instance_that_finished_by_itself_is_planned_and_healed(ws: Workspace) -> None:
    converge(ws, [aliyun_session("desk")])
    (instance,) = live_instances(ws.emulator).values()
    assert ws.emulator.aliyun.end_instance(instance["InstanceId"])  # the user left
    planned = ws.run_here("plan", str(ws.manifests), "--detailed-exitcode")
    assert planned.code == 2, str(planned)
    assert "ended by itself (the user hung up, at " in planned.out, planned.out
    # --refresh=false trusts the record: nothing to do as far as it knows.
    blind = ws.run_here("plan", str(ws.manifests), "--detailed-exitcode", "--refresh=false")
    assert blind.code == 0, str(blind)
    assert ws.apply().code == 0
    (healed,) = live_instances(ws.emulator).values()
    assert healed["InstanceId"] != instance["InstanceId"]
    assert ws.plan_exit().code == 0
    assert ws.apply().code == 0  # nothing to do; what it saw is kept
    listing = ws.run_here("state", "list")
    assert "OBSERVED" in listing.out and "Created" in listing.out, listing.out


def test_state_list_keeps_what_apply_observed(ws: Workspace) -> None:
    converge(ws, [aliyun_session("desk")])
    (instance,) = live_instances(ws.emulator).values()
    ws.emulator.aliyun.join(instance["InstanceId"])
    assert ws.apply().code == 0  # refreshes, and keeps what it saw
    observed = record(ws, "desk")["observed"]
    assert observed["status"] == "Executing" and observed["liveness"] == "running"


def test_a_lost_start_is_settled_with_exactly_one_live_instance(ws: Workspace) -> None:
    # Every answer is lost after the Start took effect: each retry starts another instance
    # into the same channel (pushing the previous one out), and the outcome stays unknown.
    ws.declare([aliyun_session("desk")])
    ws.emulator.set_faults(Faults(late_504_rate=1.0))
    lost = ws.apply(env=ws.env(max_attempts="3", max_retry_seconds="1"))
    assert lost.code != 0 and "start unconfirmed" in lost.out + lost.err, str(lost)
    assert len(ws.pending()) == 1
    ws.emulator.set_faults(Faults())
    settled = ws.apply()
    assert settled.code == 0, str(settled)
    assert ws.pending() == []
    (instance,) = live_instances(ws.emulator).values()
    stored = record(ws, "desk")
    assert stored["provider_ids"]["InstanceId"] == instance["InstanceId"]
    assert tag(instance)["attempt"] == stored["attempt"]
    assert ws.plan_exit().code == 0


def test_a_dropped_answer_of_a_session_since_removed_leaves_none_live(ws: Workspace) -> None:
    ws.declare([aliyun_session("desk")])
    ws.emulator.set_faults(Faults(lost_response_rate=1.0))
    assert ws.apply(env=ws.env(max_attempts="2", max_retry_seconds="1")).code != 0
    assert len(ws.pending()) == 1 and live_instances(ws.emulator)
    ws.emulator.set_faults(Faults())
    ws.declare([])
    settled = ws.apply("--allow-empty")
    assert settled.code == 0, str(settled)
    assert ws.pending() == [] and live_instances(ws.emulator) == {}
    assert ws.records() == []


def test_an_untracked_instance_with_our_tag_is_reported_by_plan(ws: Workspace) -> None:
    converge(ws, [aliyun_session("desk")])
    assert ws.run_here("state", "rm", "desk").code == 0
    planned = ws.run_here("plan", str(ws.manifests))
    assert 'untracked live session with this state\'s tag: "desk"' in planned.out, planned.out


def test_an_announcement_is_spoken_once(ws: Workspace) -> None:
    converge(ws, [aliyun_session("desk")])
    notice = {"id": "closing", "message": "We close in ten minutes."}
    converge(ws, [aliyun_session("desk", announcements=[notice])])
    (instance,) = live_instances(ws.emulator).values()
    assert [s["Text"] for s in instance["Speeches"]] == [notice["message"]]


def test_a_prune_leaves_none_live(ws: Workspace) -> None:
    converge(ws, [aliyun_session(f"desk-{i}") for i in range(5)])
    assert len(live_instances(ws.emulator)) == 5
    ws.declare([])
    assert ws.apply("--allow-empty").code == 0
    assert live_instances(ws.emulator) == {} and ws.records() == []


def test_one_apply_mixes_both_providers(ws: Workspace) -> None:
    converge(ws, [session("lobby"), aliyun_session("desk")])
    assert set(running(ws.emulator)) == {
        (session("lobby")["spec"]["AppId"], "room-lobby", "task-lobby")
    }
    assert set(live_instances(ws.emulator)) == {("ch-desk", "agent-desk")}
    assert {r["provider"] for r in ws.records()} == {"volcengine", "aliyun"}


def test_missing_aliyun_settings_matter_only_when_the_plan_calls_aliyun(ws: Workspace) -> None:
    env = {k: v for k, v in ws.env().items() if not k.startswith("RECONCILER_ALIYUN__")}
    ws.declare([session("lobby")])
    assert ws.apply(env=env).code == 0
    ws.declare([session("lobby"), aliyun_session("desk")])
    refused = ws.apply(env=env)
    assert refused.code == 1, str(refused)
    assert "RECONCILER_ALIYUN__ACCESS_KEY_ID" in refused.err, str(refused)
    assert live_instances(ws.emulator) == {}
