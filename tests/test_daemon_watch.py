"""`reconciler watch` end to end: a real directory, the emulator on 127.0.0.1, a SQLite state
file, and the daemon in a process of its own, driven by file saves, signals and callbacks."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from apply_helpers import (
    APP,
    SECRET_VALUES,
    Workspace,
    aliyun_session,
    emulator_server,
    live_instances,
    running,
    session,
    write_manifest,
)
from daemon_helpers import (
    CALLBACK_TOKEN,
    WatchProcess,
    aliyun_event,
    signed_volcengine_event,
    wait_until,
)
from prometheus_client.parser import text_string_to_metric_families

from reconciler.emulator.volcengine import Faults


@pytest.fixture
def started() -> Iterator[list[WatchProcess]]:
    """Every daemon a test starts, stopped (by its pid) when the test ends."""
    daemons: list[WatchProcess] = []
    yield daemons
    for daemon in daemons:
        daemon.kill()


def watch(ws: Workspace, started: list[WatchProcess], *extra: str, **kw: Any) -> WatchProcess:
    daemon = WatchProcess([ws.manifests], ws.env(), ws.root, *extra, **kw)
    started.append(daemon)
    return daemon


def starts(ws: Workspace) -> int:
    by_action = ws.emulator.calls()["by_action"]
    return int(by_action.get("StartVoiceChat", 0))


def metric(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


def converged_passes(daemon: WatchProcess) -> int:
    return sum(1 for p in daemon.passes() if p["result"] == "converged")


def test_a_file_save_starts_exactly_the_new_session(
    ws: Workspace, started: list[WatchProcess]
) -> None:
    ws.declare([session("a"), session("b")], "one.json")
    daemon = watch(ws, started)
    daemon.wait_for_pass(1)
    assert {t[2] for t in running(ws.emulator)} == {"task-a", "task-b"}
    before = ws.emulator.calls()["total"]
    passes = len(daemon.passes())

    ws.declare([session("c")], "two.json")  # an atomic save (write, then rename)
    daemon.wait_for_log("action", lambda line: line["session"] == "c")
    daemon.wait_for_pass(passes + 1)
    assert {t[2] for t in running(ws.emulator)} == {"task-a", "task-b", "task-c"}
    assert ws.emulator.calls()["total"] == before + 1, "one Start, and no other call"
    assert daemon.stop() == 0
    leaked = [secret for secret in SECRET_VALUES if secret in daemon.log]
    assert not leaked, "a secret reached the daemon's log"


def test_a_broken_file_stops_nothing_and_blocks_every_action_until_fixed(
    ws: Workspace, started: list[WatchProcess]
) -> None:
    ws.declare([session("a")], "a.json")
    ws.declare([session("b")], "b.json")
    daemon = watch(ws, started)
    daemon.wait_for_pass(1)
    calls = ws.emulator.calls()["total"]

    broken = ws.manifests / "b.json"
    broken.write_text('{"sessions": [', encoding="utf-8")
    ws.declare([session("a"), session("a2")], "a.json")  # a good change beside the bad one
    invalid = daemon.wait_for_log("pass", lambda line: line["result"] == "invalid")
    assert invalid
    assert ws.emulator.calls()["total"] == calls, "an invalid set must cause no call at all"
    status = daemon.status()
    assert status["desired_valid"] is False
    assert any("b.json" in problem for problem in status["problems"])
    assert metric(daemon.metrics(), "reconciler_desired_valid") == 0
    # The problems are logged once, not on every pass.
    daemon.signal(signal.SIGHUP)
    daemon.wait_for_log("pass", lambda line: line["result"] == "invalid", after=1)
    assert len(daemon.events("the desired set is invalid: nothing is done until it is fixed")) == 1

    write_manifest(broken, [session("b")])
    daemon.wait_for_log("action", lambda line: line["session"] == "a2")
    wait_until(lambda: daemon.status()["desired_valid"] is True, what="valid again")
    assert {t[2] for t in running(ws.emulator)} == {"task-a", "task-a2", "task-b"}
    assert metric(daemon.metrics(), "reconciler_desired_valid") == 1
    assert daemon.stop() == 0


def test_a_removed_file_while_another_is_broken_is_not_acted_on(
    ws: Workspace, started: list[WatchProcess]
) -> None:
    ws.declare([session("a")], "a.json")
    ws.declare([session("b")], "b.json")
    daemon = watch(ws, started)
    daemon.wait_for_pass(1)
    (ws.manifests / "b.json").write_text("sessions = [", encoding="utf-8")
    daemon.wait_for_log("pass", lambda line: line["result"] == "invalid")
    (ws.manifests / "a.json").unlink()
    daemon.wait_for_log("pass", lambda line: line["result"] == "invalid", after=1)
    assert {t[2] for t in running(ws.emulator)} == {"task-a", "task-b"}, "nothing stopped"

    write_manifest(ws.manifests / "b.json", [session("b")])
    daemon.wait_for_log("action", lambda line: (line["session"], line["action"]) == ("a", "delete"))
    assert {t[2] for t in running(ws.emulator)} == {"task-b"}
    assert daemon.stop() == 0


def test_drift_is_healed_by_the_resync_timer(ws: Workspace, started: list[WatchProcess]) -> None:
    ws.declare([aliyun_session("desk")])
    daemon = watch(ws, started, resync=1)
    daemon.wait_for_pass(1)
    (instance,) = live_instances(ws.emulator).values()
    assert ws.emulator.aliyun.end_instance(instance["InstanceId"])  # the user hung up

    daemon.wait_for_log("drift healed", lambda line: line["session"] == "desk")
    assert len(live_instances(ws.emulator)) == 1
    text = daemon.metrics()
    assert metric(text, "reconciler_drift_heals_total", provider="aliyun", source="observe") == 1
    assert daemon.stop() == 0


def test_drift_is_healed_on_sighup(ws: Workspace, started: list[WatchProcess]) -> None:
    ws.declare([aliyun_session("desk")])
    daemon = watch(ws, started)  # the resync timer is an hour away
    daemon.wait_for_pass(1)
    (instance,) = live_instances(ws.emulator).values()
    ws.emulator.aliyun.end_instance(instance["InstanceId"])
    daemon.signal(signal.SIGHUP)
    daemon.wait_for_log("drift healed", lambda line: line["session"] == "desk")
    assert len(live_instances(ws.emulator)) == 1
    assert daemon.stop() == 0


def test_a_volcengine_task_stop_callback_heals_the_task(
    ws: Workspace, started: list[WatchProcess]
) -> None:
    ws.declare([session("a"), session("b")])
    daemon = watch(ws, started)
    daemon.wait_for_pass(1)
    time.sleep(1.1)  # the task runs a while: its end is in a later second than its Start
    assert ws.emulator.end_task(APP, "room-a", "task-a")  # IdleTimeout in the cloud
    event = signed_volcengine_event(APP, "room-a", "task-a")
    reply = daemon.post("/callbacks/volcengine", event)
    assert reply.status_code == 200

    daemon.wait_for_log("drift healed", lambda line: line["session"] == "a")
    assert {t[2] for t in running(ws.emulator)} == {"task-a", "task-b"}
    text = daemon.metrics()
    heals = metric(text, "reconciler_drift_heals_total", provider="volcengine", source="callback")
    assert heals == 1
    assert starts(ws) == 3, "only task-a started again"

    # The same event again (deliveries repeat): the task runs, nothing more happens.
    passes = len(daemon.passes())
    daemon.post("/callbacks/volcengine", event)
    daemon.wait_for_pass(passes + 1)
    assert starts(ws) == 3
    assert daemon.stop() == 0


def test_a_late_task_stop_of_an_earlier_task_changes_nothing(
    ws: Workspace, started: list[WatchProcess]
) -> None:
    ws.declare([session("a")])
    daemon = watch(ws, started)
    daemon.wait_for_pass(1)
    # A stop event from long before this task was started (a replaced task's, delivered late).
    event = signed_volcengine_event(APP, "room-a", "task-a", at_ms=_ms_from_now(-3600))
    assert daemon.post("/callbacks/volcengine", event).status_code == 200
    daemon.wait_for_pass(2)
    assert starts(ws) == 1
    assert daemon.stop() == 0


def test_an_aliyun_agent_stop_callback_heals_the_agent(
    ws: Workspace, started: list[WatchProcess]
) -> None:
    ws.declare([aliyun_session("desk"), aliyun_session("bar")])
    daemon = watch(ws, started)
    daemon.wait_for_pass(1)
    desk = next(i for i in live_instances(ws.emulator).values() if "desk" in i["UserData"])
    ws.emulator.aliyun.end_instance(desk["InstanceId"])
    reply = daemon.post(
        "/callbacks/aliyun", aliyun_event(desk), {"Authorization": f"Bearer {CALLBACK_TOKEN}"}
    )
    assert reply.status_code == 200
    daemon.wait_for_log("drift healed", lambda line: line["session"] == "desk")
    assert len(live_instances(ws.emulator)) == 2
    text = daemon.metrics()
    assert metric(text, "reconciler_drift_heals_total", provider="aliyun", source="callback") == 1
    assert daemon.stop() == 0


def test_forged_callbacks_are_refused_and_change_nothing(
    ws: Workspace, started: list[WatchProcess]
) -> None:
    ws.declare([session("a"), aliyun_session("desk")])
    daemon = watch(ws, started)
    daemon.wait_for_pass(1)
    (desk,) = live_instances(ws.emulator).values()
    calls = ws.emulator.calls()["total"] + ws.emulator.aliyun.calls()["total"]
    forged = signed_volcengine_event(APP, "room-a", "task-a", secret="guessed")
    assert daemon.post("/callbacks/volcengine", forged).status_code == 401
    wrong_token = {"Authorization": "Bearer not-the-token"}
    assert daemon.post("/callbacks/aliyun", aliyun_event(desk), wrong_token).status_code == 401
    assert daemon.post("/callbacks/aliyun", aliyun_event(desk)).status_code == 401
    daemon.signal(signal.SIGHUP)  # a pass after them: they left nothing to act on
    daemon.wait_for_pass(2)
    assert len(daemon.passes()) == 2
    assert ws.emulator.calls()["total"] + ws.emulator.aliyun.calls()["total"] == calls + 2, (
        "the SIGHUP pass observes the Aliyun record (Describe, List) and starts nothing"
    )
    assert "not-the-token" not in daemon.log and "guessed" not in daemon.log
    assert daemon.stop() == 0


def test_sigterm_mid_apply_exits_0_and_the_next_run_converges_without_a_duplicate_start(
    tmp_path: Path, started: list[WatchProcess]
) -> None:
    with emulator_server(Faults(latency=0.4)) as server:
        ws = Workspace(tmp_path, server, extra={"parallelism": "2"})
        sessions = [session(f"s{i}") for i in range(12)]
        ws.declare(sessions)
        daemon = watch(ws, started, "--grace", "10")
        daemon.wait_for_log("action")  # calls are in flight
        assert daemon.stop() == 0
        assert len(running(server)) < 12, "the daemon stopped before finishing the plan"
        assert not ws.pending(), "every intent written was finished before the exit"

        result = ws.apply()
        assert result.code == 0, str(result)
        assert len(running(server)) == 12
        assert int(server.calls()["by_outcome"].get("ok", 0)) == 12, "no Start sent twice"


def test_a_second_signal_exits_at_once(tmp_path: Path, started: list[WatchProcess]) -> None:
    with emulator_server(Faults(latency=1.0)) as server:
        ws = Workspace(tmp_path, server, extra={"parallelism": "1"})
        ws.declare([session(f"s{i}") for i in range(6)])
        daemon = watch(ws, started, "--grace", "60")
        daemon.wait_for_log("leading")
        time.sleep(0.5)  # the first Start is in flight, the grace period is long
        daemon.signal(signal.SIGTERM)
        daemon.wait_for_log("shutting down")
        began = time.monotonic()
        daemon.signal(signal.SIGTERM)
        assert daemon.process.wait(10) == 130
        assert time.monotonic() - began < 5, "the second signal did not exit at once"


def test_a_second_daemon_on_sqlite_state_is_refused_with_the_holder_named(
    ws: Workspace, started: list[WatchProcess]
) -> None:
    ws.declare([session("a")])
    daemon = watch(ws, started)
    daemon.wait_for_pass(1)
    second = ws.run("watch", str(ws.manifests), "--listen", "127.0.0.1:0")
    assert second.code == 1, str(second)
    assert f"pid {daemon.pid}" in second.err and "watch" in second.err
    assert daemon.stop() == 0


def test_a_busy_listen_address_is_one_clear_error(ws: Workspace) -> None:
    import socket

    ws.declare([session("a")])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = ws.run("watch", str(ws.manifests), "--listen", f"127.0.0.1:{port}")
    assert result.code == 1, str(result)
    assert f"error: cannot listen on 127.0.0.1:{port}: address already in use" in result.err
    assert "Traceback" not in result.err
    assert running(ws.emulator) == {}, "nothing started without its HTTP surface"


def test_a_failing_session_backs_off_and_does_not_hold_up_the_others(
    ws: Workspace, started: list[WatchProcess]
) -> None:
    ws.declare([session("a")])
    daemon = watch(ws, started)
    daemon.wait_for_pass(1)
    # Someone else's task already runs where "bad" would go: its Start conflicts every time.
    from apply_helpers import start_foreign_task

    start_foreign_task(ws.emulator.url, session("bad")["spec"])
    ws.declare([session("a"), session("bad")])
    daemon.wait_for_log("action", lambda line: line["session"] == "bad")
    wait_until(lambda: daemon.sessions()["bad"]["status"] == "backoff", what="bad backs off")
    bad = daemon.sessions()["bad"]
    assert bad["next_retry"] and bad["failures"] == 1 and bad["last_error"]
    ws.declare([session("a"), session("bad"), session("c")])
    daemon.wait_for_log("action", lambda line: line["session"] == "c")
    assert "task-c" in {t[2] for t in running(ws.emulator)}
    # Retried on its own once due (1 s, jittered), without any trigger from outside.
    daemon.wait_for_log("action", lambda line: line["session"] == "bad", after=1)
    wait_until(lambda: daemon.sessions()["bad"]["failures"] == 2, what="a second failure")
    assert daemon.stop() == 0


def test_health_readiness_status_and_metrics(ws: Workspace, started: list[WatchProcess]) -> None:
    ws.declare([session("a"), aliyun_session("desk")])
    daemon = watch(ws, started)
    daemon.wait_for_pass(1)
    assert daemon.get("/healthz").status_code == 200
    assert daemon.get("/readyz").status_code == 200
    daemon.signal(signal.SIGHUP)  # a pass that observes the Aliyun record it started
    daemon.wait_for_pass(2)
    sessions = daemon.sessions()
    assert {name: s["status"] for name, s in sessions.items()} == {
        "a": "running",
        "desk": "running",
    }
    assert sessions["desk"]["provider"] == "aliyun" and sessions["desk"]["last_observed"]
    text = daemon.metrics()
    names = {family.name for family in text_string_to_metric_families(text)}
    assert {
        "reconciler_reconcile",
        "reconciler_reconcile_duration_seconds",
        "reconciler_provider_requests",
        "reconciler_sessions",
        "reconciler_desired_valid",
        "reconciler_leader",
        "reconciler_last_success_timestamp_seconds",
        "reconciler_drift_heals",
    } <= names
    assert metric(text, "reconciler_leader") == 1
    assert metric(text, "reconciler_reconcile_total", result="converged") == 2
    ok = {"provider": "volcengine", "action": "start", "outcome": "ok"}
    assert metric(text, "reconciler_provider_requests_total", **ok) == 1
    assert metric(text, "reconciler_sessions", provider="aliyun", status="running") == 1
    assert daemon.stop() == 0


def _ms_from_now(seconds: float) -> int:
    return int((time.time() + seconds) * 1000)
