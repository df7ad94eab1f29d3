"""`reconciler apply` end to end: the CLI against the emulator over real sockets, a real SQLite
state file, the settings a user sets. Most runs go through `reconciler.cli.main` in this process
(the same code path as `python -m reconciler`, without the interpreter start-up); the ones about
the process itself (no terminal, the first create) run it as a subprocess. One test drives the
Applier directly, for a spec the validator would never let through to the cloud.
"""

from __future__ import annotations

import asyncio
import json
from random import Random
from typing import Any

import pytest
from apply_helpers import (
    AK,
    APP,
    SECRET_ENV,
    SECRET_VALUES,
    SK,
    Workspace,
    assert_cloud_matches,
    identity,
    resolve,
    running,
    session,
    start_foreign_task,
)

from reconciler.core.model import DesiredSession, JournalOp
from reconciler.core.normalize import fingerprint, redact
from reconciler.emulator.volcengine import Faults
from reconciler.engine.applier import Applier
from reconciler.engine.results import Outcome
from reconciler.providers.registry import PROVIDERS
from reconciler.providers.volcengine.client import VolcengineClient
from reconciler.providers.volcengine.sessions import VolcengineSessions
from reconciler.retrying import RetryPolicy
from reconciler.state.sqlite import SqliteStateStore
from reconciler.workspace import schema_set


def calls(ws: Workspace) -> dict[str, Any]:
    return ws.emulator.calls()


def total_calls(ws: Workspace) -> int:
    return int(calls(ws)["total"])


def names(ws: Workspace) -> list[str]:
    return [record["name"] for record in ws.records()]


def converge(ws: Workspace, sessions: list[dict[str, Any]]) -> None:
    ws.declare(sessions)
    result = ws.apply()
    assert result.code == 0, str(result)
    assert_cloud_matches(ws.emulator, sessions)


def draws_starting(rate: float, pattern: str) -> int:
    """A fault seed whose first draws fall below `rate` ("x": fault) or not ("."), in order."""
    for seed in range(10_000):
        random = Random(seed)
        if all((random.random() < rate) == (mark == "x") for mark in pattern):
            return seed
    raise AssertionError("no seed found")


# -- create, no-op, replace, delete ----------------------------------------------------------


def test_create_sends_resolved_secrets_and_stores_none(ws: Workspace) -> None:
    sessions = [session("alpha"), session("beta"), session("gamma", room="shared-room")]
    ws.declare(sessions)
    result = ws.apply(here=False)  # a real `python -m reconciler apply`
    assert result.code == 0, str(result)
    assert "3 succeeded, 0 failed" in result.out

    assert_cloud_matches(ws.emulator, sessions)
    body = running(ws.emulator)[identity(sessions[0])]["Body"]
    assert body["Config"]["LLMConfig"]["APIKey"] == SECRET_ENV["TEST_LLM_API_KEY"]
    token = body["Config"]["TTSConfig"]["ProviderParams"]["app"]["token"]
    assert token == SECRET_ENV["TEST_TTS_TOKEN"]
    assert calls(ws)["by_action"] == {"StartVoiceChat": 3}

    assert names(ws) == ["alpha", "beta", "gamma"]
    stored = ws.state_bytes()
    assert stored
    for secret in SECRET_VALUES:
        assert secret.encode() not in stored, "a secret value reached the state"
        assert secret not in result.out and secret not in result.err
    listing = json.dumps(ws.records())
    assert all(secret not in listing for secret in SECRET_VALUES)
    assert "${env:TEST_LLM_API_KEY}" in listing  # the reference, not the value, is recorded
    assert ws.pending() == []
    assert ws.plan_exit().code == 0


def test_second_apply_makes_no_call_at_all(ws: Workspace) -> None:
    converge(ws, [session(f"s{i}") for i in range(5)])
    before = calls(ws)
    serial = ws.serial()
    again = ws.apply()
    assert again.code == 0, str(again)
    assert "No changes" in again.out
    assert calls(ws) == before
    assert ws.serial() == serial
    assert ws.plan_exit().code == 0


def test_config_change_replaces_the_task(ws: Workspace) -> None:
    old = [session("same-id"), session("moved"), session("kept")]
    converge(ws, old)
    new = [
        session("same-id", temperature=0.9, prompt="Speak slowly."),
        session("moved", task="task-moved-v2"),
        session("kept"),
    ]
    ws.declare(new)
    assert ws.plan_exit().code == 2
    before = calls(ws)["by_action"]
    result = ws.apply()
    assert result.code == 0, str(result)

    assert_cloud_matches(ws.emulator, new)  # new bodies; the moved task's old identity is gone
    assert identity(old[1]) not in running(ws.emulator)
    after = calls(ws)["by_action"]
    assert after["StopVoiceChat"] - before.get("StopVoiceChat", 0) == 2
    assert after["StartVoiceChat"] - before["StartVoiceChat"] == 2
    records = {record["name"]: record for record in ws.records()}
    assert records["moved"]["provider_ids"]["TaskId"] == "task-moved-v2"
    assert records["same-id"]["spec"]["Config"]["LLMConfig"]["Temperature"] == 0.9
    assert ws.plan_exit().code == 0


def test_removed_session_is_stopped_and_forgotten(ws: Workspace) -> None:
    sessions = [session("stay"), session("go")]
    converge(ws, sessions)
    ws.declare(sessions[:1])
    result = ws.apply()
    assert result.code == 0, str(result)
    assert_cloud_matches(ws.emulator, sessions[:1])
    assert calls(ws)["by_action"].get("StopVoiceChat") == 1
    assert names(ws) == ["stay"]
    assert ws.plan_exit().code == 0


# -- announcements ---------------------------------------------------------------------------


def test_a_new_announcement_is_spoken_exactly_once(ws: Workspace) -> None:
    declared_at_start = {"id": "welcome-note", "message": "Old news."}
    converge(ws, [session("desk", announcements=[declared_at_start]), session("other")])
    # Declared when the session started: recorded as delivered, never played into it.
    assert running(ws.emulator)[identity(session("desk"))]["Updates"] == []

    notice = {"id": "maint-1121", "message": "Maintenance at 15:00.", "interrupt_mode": 1}
    sessions = [session("desk", announcements=[declared_at_start, notice]), session("other")]
    ws.declare(sessions)
    result = ws.apply()
    assert result.code == 0, str(result)
    task = running(ws.emulator)[identity(sessions[0])]
    assert task["Updates"] == [
        {
            "AppId": APP,
            "RoomId": "room-desk",
            "TaskId": "task-desk",
            "Command": "ExternalTextToSpeech",
            "Message": "Maintenance at 15:00.",
            "InterruptMode": 1,
        }
    ]
    assert running(ws.emulator)[identity(sessions[1])]["Updates"] == []
    assert calls(ws)["by_action"].get("StopVoiceChat") is None  # no restart for an announcement
    desk = next(r for r in ws.records() if r["name"] == "desk")
    assert set(desk["announcements_delivered"]) == {"welcome-note", "maint-1121"}

    before = calls(ws)
    again = ws.apply()
    assert again.code == 0, str(again)
    assert calls(ws) == before
    assert len(running(ws.emulator)[identity(sessions[0])]["Updates"]) == 1
    assert ws.plan_exit().code == 0


def test_a_throttled_announcement_is_not_lost(ws: Workspace) -> None:
    """Every attempt was refused at the gateway (429): it was certainly not played, so it is not
    recorded as delivered, and the next apply speaks it — once."""
    converge(ws, [session("desk")])
    notice = {"id": "notice-1", "message": "Back in five minutes."}
    ws.declare([session("desk", announcements=[notice])])
    ws.emulator.set_faults(Faults(error_429_rate=1.0, seed=1))
    throttled = ws.apply(env=ws.env(max_attempts="2", max_retry_seconds="0.05"))
    assert throttled.code == 1, str(throttled)
    desk = ws.records()[0]
    assert "notice-1" not in desk["announcements_delivered"]

    ws.emulator.set_faults(Faults())
    result = ws.apply()
    assert result.code == 0, str(result)
    updates = running(ws.emulator)[identity(session("desk"))]["Updates"]
    assert [u["Message"] for u in updates] == ["Back in five minutes."]
    assert ws.apply().code == 0
    assert len(running(ws.emulator)[identity(session("desk"))]["Updates"]) == 1


def test_an_unconfirmed_announcement_is_never_repeated(ws: Workspace) -> None:
    """A lost answer may mean it was played: at most once wins over at least once."""
    converge(ws, [session("desk")])
    notice = {"id": "notice-2", "message": "Closing soon."}
    ws.declare([session("desk", announcements=[notice])])
    ws.emulator.set_faults(Faults(lost_response_rate=1.0, seed=1))
    lost = ws.apply()
    assert lost.code == 0, str(lost)  # recorded as delivered: a warning, not a failure
    assert "delivery unconfirmed" in lost.err
    assert "0 succeeded, 1 unconfirmed, 0 failed" in lost.out
    ws.emulator.set_faults(Faults())
    before = calls(ws)
    assert ws.apply().code == 0
    assert calls(ws) == before
    updates = running(ws.emulator)[identity(session("desk"))]["Updates"]
    assert [u["Message"] for u in updates] == ["Closing soon."]  # the lost answer's one play


# -- guards ----------------------------------------------------------------------------------


def test_a_protected_session_is_not_stopped(ws: Workspace) -> None:
    sessions = [session("vip", protect=True), session("normal")]
    converge(ws, sessions)
    ws.declare(sessions[1:])
    before, serial = calls(ws), ws.serial()
    result = ws.apply()
    # Kept running (as Argo CD's Prune=false), with a notice; nothing else to do.
    assert result.code == 0, str(result)
    assert "kept: protected (no longer declared)" in result.out
    assert calls(ws) == before
    assert ws.serial() == serial
    assert_cloud_matches(ws.emulator, sessions)
    assert names(ws) == ["normal", "vip"]

    # A protected session is not restarted for a config change either.
    ws.declare([session("vip", protect=True, temperature=0.1), sessions[1]])
    refused = ws.apply()
    assert refused.code == 1, str(refused)
    assert calls(ws) == before
    assert_cloud_matches(ws.emulator, sessions)


def test_an_empty_desired_set_stops_nothing_unless_allowed(ws: Workspace) -> None:
    sessions = [session("a"), session("b")]
    converge(ws, sessions)
    ws.declare([])
    before = calls(ws)
    refused = ws.apply()
    assert refused.code == 1, str(refused)
    assert "--allow-empty" in refused.out + refused.err
    assert calls(ws) == before
    assert_cloud_matches(ws.emulator, sessions)
    assert names(ws) == ["a", "b"]

    allowed = ws.apply("--allow-empty")
    assert allowed.code == 0, str(allowed)
    assert running(ws.emulator) == {}
    assert names(ws) == []


def test_the_stop_budget_refuses_a_plan_that_stops_too_many(ws: Workspace) -> None:
    sessions = [session(f"s{i}") for i in range(5)]
    converge(ws, sessions)
    # 3 deletes + 1 restart = 4 stops.
    desired = [session("s0", temperature=0.2), session("s4")]
    ws.declare(desired)
    before = calls(ws)
    refused = ws.apply("--max-stops", "3")
    assert refused.code == 1, str(refused)
    assert "--max-stops 4" in refused.out + refused.err
    assert calls(ws) == before
    # The setting is the default budget...
    assert ws.apply(env=ws.env(max_stops="3")).code == 1
    assert calls(ws) == before
    assert_cloud_matches(ws.emulator, sessions)

    allowed = ws.apply("--max-stops", "4")
    assert allowed.code == 0, str(allowed)
    assert_cloud_matches(ws.emulator, desired)


# -- refusals before any call ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("credentials", "code"),
    [
        ({"secret_access_key": "not-the-secret"}, "SignatureDoesNotMatch"),
        ({"access_key_id": "AKLTnobody"}, "InvalidAccessKey"),
    ],
    ids=["wrong-secret", "unknown-key"],
)
def test_refused_credentials_stop_the_apply_and_touch_no_record(
    ws: Workspace, credentials: dict[str, str], code: str
) -> None:
    sessions = [session("a"), session("b"), session("c")]
    converge(ws, sessions)
    records, serial = ws.records(), ws.serial()
    # A restart, a delete and a create, all of which the cloud will refuse.
    ws.declare([session("a", temperature=0.3), session("c"), session("d")])
    result = ws.apply(env=ws.env(**credentials))
    assert result.code == 1, str(result)
    assert code in result.err
    assert "refused the credentials" in result.err
    assert ws.records() == records
    assert ws.serial() == serial
    assert_cloud_matches(ws.emulator, sessions)
    assert all(secret not in result.out + result.err for secret in SECRET_VALUES)

    fixed = ws.apply()
    assert fixed.code == 0, str(fixed)
    assert_cloud_matches(ws.emulator, [session("a", temperature=0.3), session("c"), session("d")])


def test_a_missing_secret_stops_the_apply_before_any_call(ws: Workspace) -> None:
    ws.declare([session("a"), session("b", llm_key="${env:TEST_NOT_SET}")])
    result = ws.apply()
    assert result.code == 1, str(result)
    assert "TEST_NOT_SET" in result.err
    assert total_calls(ws) == 0
    assert names(ws) == []
    assert ws.pending() == []


def test_missing_credentials_stop_the_apply_before_any_call(ws: Workspace) -> None:
    ws.declare([session("a"), session("b")])
    env = ws.env()
    del env["RECONCILER_VOLCENGINE__ACCESS_KEY_ID"]
    result = ws.apply(env=env)
    assert result.code == 1, str(result)
    assert "credentials are missing" in result.err
    assert total_calls(ws) == 0
    assert names(ws) == []
    assert ws.pending() == [], "no intent may be left for a call that was never made"
    assert ws.apply().code == 0


def test_apply_off_a_terminal_needs_auto_approve(ws: Workspace) -> None:
    ws.declare([session("a")])
    result = ws.run("apply", str(ws.manifests))  # stdin is /dev/null
    assert result.code == 1, str(result)
    assert "--auto-approve" in result.err
    assert total_calls(ws) == 0
    assert names(ws) == []


# -- the cloud moved under us ----------------------------------------------------------------


def test_stopping_a_task_that_vanished_counts_as_stopped(ws: Workspace) -> None:
    converge(ws, [session("gone"), session("changed"), session("kept")])
    ws.emulator.reset()  # every task ended by itself (IdleTimeout, a crash of the cloud...)
    desired = [session("changed", temperature=0.8), session("kept")]
    ws.declare(desired)
    result = ws.apply()
    assert result.code == 0, str(result)
    assert "already stopped" in result.err
    assert names(ws) == ["changed", "kept"]
    # "kept" is still recorded as running though its task is gone: the records are what we
    # believe, and nothing here lists the cloud. The restarted one runs with its new body.
    assert_cloud_matches(ws.emulator, desired[:1])


def test_a_start_that_meets_an_unrecorded_task_fails_that_session_only(ws: Workspace) -> None:
    foreign = resolve(session("b", temperature=0.11)["spec"], SECRET_ENV)
    start_foreign_task(ws.emulator.url, foreign)
    sessions = [session("a"), session("b"), session("c")]
    ws.declare(sessions)
    result = ws.apply()
    assert result.code == 3, str(result)
    assert "--adopt-running" in result.err
    assert names(ws) == ["a", "c"]
    tasks = running(ws.emulator)
    assert tasks[identity(sessions[1])]["Body"] == foreign  # left alone
    assert ws.pending() == []

    again = ws.apply()
    assert again.code == 1, str(again)  # nothing else to do, and b still refused
    adopted = ws.apply("--adopt-running")
    assert adopted.code == 0, str(adopted)
    assert names(ws) == ["a", "b", "c"]
    assert running(ws.emulator)[identity(sessions[1])]["Body"] == foreign  # taken over as it is


def test_a_throttled_start_that_then_conflicts_is_not_taken_for_ours(ws: Workspace) -> None:
    """429 is answered at the gateway before the call takes effect: a conflict after it is
    someone else's task, not our own lost Start."""
    foreign = resolve(session("b", temperature=0.11)["spec"], SECRET_ENV)
    start_foreign_task(ws.emulator.url, foreign)
    ws.declare([session("b")])
    ws.emulator.set_faults(Faults(error_429_rate=0.5, seed=draws_starting(0.5, "x.")))
    result = ws.apply()
    assert result.code == 1, str(result)
    assert "--adopt-running" in result.err
    assert calls(ws)["by_outcome"]["FlowLimitExceeded"] == 1
    assert names(ws) == []


def test_a_start_whose_answer_never_came_is_finished_by_the_next_apply(ws: Workspace) -> None:
    """The Start took effect (late 504), then every retry failed: the outcome is unknown. The
    next apply must treat "already started" as its own Start, not as a foreign task."""
    ws.declare([session("a")])
    seed = draws_starting(0.5, ".x")  # 1st call: late 504 (took effect); 2nd: 500 (did not)
    ws.emulator.set_faults(Faults(error_500_rate=0.5, late_504_rate=0.5, seed=seed))
    failed = ws.apply(env=ws.env(max_attempts="2", max_retry_seconds="0.05"))
    assert failed.code == 1, str(failed)
    assert len(running(ws.emulator)) == 1
    assert ws.plan_exit().code == 2

    ws.emulator.set_faults(Faults())
    result = ws.apply()
    assert result.code == 0, str(result)
    assert "--adopt-running" not in result.err
    assert names(ws) == ["a"]
    assert_cloud_matches(ws.emulator, [session("a")])
    assert ws.pending() == []
    assert ws.plan_exit().code == 0


def test_a_session_with_an_unresolved_intent_is_left_alone(ws: Workspace) -> None:
    """While a Start's outcome is unknown and its recovery fails again, the plan's own action
    for that session is not run: never a second intent for one session."""
    ws.declare([session("a")])
    seed = draws_starting(0.5, ".x")  # late 504 (took effect), then a 500: outcome unknown
    ws.emulator.set_faults(Faults(error_500_rate=0.5, late_504_rate=0.5, seed=seed))
    first = ws.apply(env=ws.env(max_attempts="2", max_retry_seconds="0.05"))
    assert first.code == 1, str(first)
    assert [entry.name for entry in ws.pending()] == ["a"]

    ws.emulator.set_faults(Faults(error_500_rate=1.0, seed=1))
    before = calls(ws)["by_action"]["StartVoiceChat"]
    blocked = ws.apply(env=ws.env(max_attempts="1"))
    assert blocked.code == 1, str(blocked)
    assert "not touched" in blocked.err
    assert [entry.name for entry in ws.pending()] == ["a"]  # still the one intent
    assert calls(ws)["by_action"]["StartVoiceChat"] - before == 1  # the recovery's only

    ws.emulator.set_faults(Faults())
    result = ws.apply()
    assert result.code == 0, str(result)
    assert_cloud_matches(ws.emulator, [session("a")])
    assert ws.pending() == []


def test_recovery_finishes_a_start_the_cloud_refuses(ws: Workspace) -> None:
    """A pending Start re-sent after a crash and refused for a bad parameter did not take
    effect the first time either: the intent is finished, not left to block the session."""
    spec = resolve(session("odd")["spec"], SECRET_ENV)
    spec["AgentConfig"]["UserId"] = spec["AgentConfig"]["TargetUserId"][0]  # the cloud refuses
    odd = DesiredSession("odd", "volcengine", "/".join(identity({"spec": spec})), spec)
    sensitive = schema_set().sensitive
    with SqliteStateStore(ws.state) as store:
        key = store.meta().fingerprint_key
        ids = dict(zip(("AppId", "RoomId", "TaskId"), identity({"spec": spec}), strict=True))
        store.begin_intent(  # as a run killed during this Start left it
            "odd",
            JournalOp.START,
            "volcengine",
            odd.identity,
            json.dumps(
                {
                    "provider_ids": ids,
                    "fingerprint": fingerprint(redact(spec, sensitive["volcengine"], key, {})),
                }
            ),
        )

        async def recover() -> list[Outcome]:
            client = VolcengineClient(ws.emulator.url, "cn-north-1", "2024-12-01", AK, SK)
            async with client:
                applier = Applier(
                    store=store,
                    lock=held,
                    providers={"volcengine": VolcengineSessions(client)},
                    registry=PROVIDERS,
                    secrets={},
                    sensitive=sensitive,
                    now=lambda: "2026-01-01T00:00:00Z",
                    policy=RetryPolicy(max_attempts=2, base_seconds=0.001),
                )
                report = await applier.recover([odd])
            return [result.outcome for result in report.results]

        with store.lock("apply") as held:
            assert asyncio.run(recover()) == [Outcome.FAILED]
        assert store.pending_intents() == []
        assert store.list_records() == []
    assert calls(ws)["by_outcome"] == {"InvalidParameter": 1}
