"""Apply under chaos and under SIGKILL: the cloud ends up running exactly the desired tasks.

Chaos: the emulator answers 20% of calls with 500/502/503/429 (no effect), loses 5% of answers
after acting (connection closed) and answers 5% with a late 504 after acting. Several concurrent
calls draw from one seeded generator, so which call gets which fault depends on scheduling:
these tests assert only what must hold whatever the draws — convergence within a few runs, no
orphan, no missing task, no outdated body, and a plan with no changes afterwards.

Crash: a real `python -m reconciler apply` subprocess is SIGKILLed at random moments (after a
random number of calls reached the emulator, or a random delay after the first one), several
times in a row, then run to completion. The emulator refuses a second Start of a running task,
and its "ok" counter says how many calls took effect: every Start and Stop the change needs
took effect exactly once — none repeated, none undone and redone.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from random import Random
from typing import Any

import pytest
from apply_helpers import (
    SECRET_ENV,
    Result,
    Workspace,
    assert_cloud_matches,
    emulator_server,
    identity,
    kill_repeatedly,
    ok_calls,
    resolve,
    running,
    session,
    start_foreign_task,
)

from reconciler.emulator.volcengine import Faults

MAX_RUNS = 5
CHAOS = dict(
    error_500_rate=0.05,
    error_502_rate=0.05,
    error_503_rate=0.05,
    error_429_rate=0.05,
    lost_response_rate=0.05,
    late_504_rate=0.05,
)


@pytest.fixture
def chaos(tmp_path: Path) -> Iterator[Workspace]:
    # Few attempts per call: some calls exhaust them (about 3%), so every run leaves sessions
    # behind, Starts whose outcome is unknown among them, for the next run to finish.
    with emulator_server(Faults(**CHAOS, seed=20261121)) as server:
        yield Workspace(tmp_path, server, extra={"max_attempts": "3", "max_retry_seconds": "2"})


@pytest.fixture
def slow(tmp_path: Path) -> Iterator[Workspace]:
    """No faults, but 20 ms per call, so a run is mid-flight for a while."""
    with emulator_server(Faults(latency=0.02)) as server:
        yield Workspace(tmp_path, server, extra={"parallelism": "8"})


def converge(ws: Workspace, sessions: list[dict[str, Any]], *extra: str) -> list[Result]:
    """Apply until it exits 0 (at most MAX_RUNS runs), then check the cloud and the records."""
    ws.declare(sessions)
    results: list[Result] = []
    for _ in range(MAX_RUNS):
        result = ws.apply(*extra)
        results.append(result)
        # 3: partly applied. 1 only as "nothing succeeded" of a rerun left with a few sessions,
        # never a refusal.
        assert result.code in (0, 3) or (len(results) > 1 and result.code == 1), str(result)
        assert "Apply:" in result.out, str(result)
        if result.code == 0:
            break
    assert results[-1].code == 0, f"not converged in {MAX_RUNS} runs:\n{results[-1]}"
    check_converged(ws, sessions)
    return results


def check_converged(ws: Workspace, sessions: list[dict[str, Any]]) -> None:
    assert_cloud_matches(ws.emulator, sessions)
    records = ws.records()
    assert sorted(r["name"] for r in records) == sorted(s["name"] for s in sessions)
    by_name = {s["name"]: s for s in sessions}
    for record in records:
        assert tuple(record["provider_ids"].values()) == identity(by_name[record["name"]])
    assert ws.pending() == []
    plan = ws.plan_exit()
    assert plan.code == 0, str(plan)


# -- chaos -----------------------------------------------------------------------------------


def test_300_sessions_converge_under_chaos_then_change_under_chaos(chaos: Workspace) -> None:
    sessions = [session(f"agent-{i:03d}") for i in range(300)]
    converge(chaos, sessions)
    calls = chaos.emulator.calls()
    # The faults were really there, and were survived.
    for code in ("InternalError", "ServiceUnavailableTemp", "FlowLimitExceeded", "lost_response"):
        assert calls["by_outcome"].get(code, 0) > 0, calls

    # 50 restarts for a config change, 50 removals, 250 untouched: still under chaos.
    changed = [
        session(s["name"], temperature=0.9) if i % 6 == 1 else s
        for i, s in enumerate(sessions)
        if i % 6 != 0
    ]
    assert len(changed) == 250 and sum(1 for i in range(300) if i % 6 == 1) == 50
    converge(chaos, changed, "--max-stops", "100")
    removed = [s for i, s in enumerate(sessions) if i % 6 == 0]
    tasks = running(chaos.emulator)
    assert not any(identity(s) in tasks for s in removed)


def test_announcements_under_chaos_are_spoken_at_most_once(chaos: Workspace) -> None:
    sessions = [session(f"desk-{i:02d}") for i in range(40)]
    converge(chaos, sessions)
    notice = {"id": "closing-time", "message": "We close in ten minutes."}
    announced = [session(s["name"], announcements=[notice]) for s in sessions]
    converge(chaos, announced)
    for task in running(chaos.emulator).values():
        assert len(task["Updates"]) <= 1
    assert all("closing-time" in r["announcements_delivered"] for r in chaos.records())
    # Most went through (a lost answer or a 5xx leaves one unconfirmed, never repeated).
    spoken = sum(len(t["Updates"]) for t in running(chaos.emulator).values())
    assert spoken >= 20


# -- SIGKILL ---------------------------------------------------------------------------------


def finish(ws: Workspace, *extra: str) -> Result:
    result = ws.run("apply", str(ws.manifests), "--auto-approve", *extra)
    assert result.code == 0, str(result)
    assert "not recorded here" not in result.err  # no Start of ours taken for a foreign task
    return result


def test_sigkill_during_creates_leaves_no_orphan_missing_or_duplicate(slow: Workspace) -> None:
    sessions = [session(f"kiosk-{i:03d}") for i in range(200)]
    slow.declare(sessions)
    pending = kill_repeatedly(slow, 5, Random(7))
    assert any(pending), "no kill landed while a call was in flight"
    # An intent is written only when its call goes out: never more pending than in flight.
    assert max(pending) <= 8, pending
    finish(slow)
    check_converged(slow, sessions)
    calls = slow.emulator.calls()
    # Each task was started exactly once: a Start re-sent after a kill was answered "already
    # started" (refused by the emulator, taken as ours), and nothing was stopped to be redone.
    assert ok_calls(slow.emulator) == 200, calls
    assert "StopVoiceChat" not in calls["by_action"], calls


def test_sigkill_during_stops_replaces_and_announcements(slow: Workspace) -> None:
    first = [session(f"room-{i:03d}") for i in range(120)]
    converge(slow, first)
    notice = {"id": "drill-1", "message": "A fire drill starts now."}
    second = (
        [session(f"room-{i:03d}", temperature=0.25) for i in range(30, 60)]  # restart in place
        + [session(f"room-{i:03d}", task=f"task-room-{i:03d}-v2") for i in range(60, 80)]  # moved
        + [session(f"room-{i:03d}", announcements=[notice]) for i in range(80, 100)]
        + [session(f"room-{i:03d}") for i in range(100, 120)]  # untouched
        + [session(f"new-{i:02d}") for i in range(30)]  # created
    )  # room-000..029 removed
    slow.declare(second)
    before = ok_calls(slow.emulator)
    pending = kill_repeatedly(slow, 5, Random(11), "--max-stops", "100")
    assert any(pending), "no kill landed while a call was in flight"
    assert max(pending) <= 8, pending
    finish(slow, "--max-stops", "100")
    check_converged(slow, second)

    tasks = running(slow.emulator)
    spoken = 0
    for entry in second:
        updates = tasks[identity(entry)]["Updates"]
        assert len(updates) <= (1 if entry.get("announcements") else 0)  # at most once
        spoken += len(updates)
    records = {r["name"]: r for r in slow.records()}
    assert all(
        "drill-1" in records[f"room-{i:03d}"]["announcements_delivered"] for i in range(80, 100)
    )
    # 80 stops (30 removed, 50 restarted) and 80 starts (50 restarted, 30 new) took effect
    # once each, plus the announcements that were played: nothing more.
    assert ok_calls(slow.emulator) - before == 80 + 80 + spoken


def test_a_kill_does_not_make_an_unstarted_session_adopt_a_foreign_task(slow: Workspace) -> None:
    """Recovery takes "already started" as its own Start only for a Start that had begun. A
    session whose turn had not come when the run was killed must still refuse a task someone
    else started, as it would have without the kill."""
    sessions = [session(f"s-{i:03d}") for i in range(60)]
    foreign_owner = session("zz-foreign")  # last in name order: its call was never near
    foreign = resolve(session("zz-foreign", temperature=0.11)["spec"], SECRET_ENV)
    start_foreign_task(slow.emulator.url, foreign)
    slow.declare([*sessions, foreign_owner])
    pending = kill_repeatedly(slow, 1, Random(3))
    assert 0 < pending[0] <= 8

    result = slow.run("apply", str(slow.manifests), "--auto-approve")
    assert result.code == 3, str(result)
    assert "zz-foreign" in result.err and "--adopt-running" in result.err
    assert "zz-foreign" not in [r["name"] for r in slow.records()]
    tasks = running(slow.emulator)
    assert tasks.pop(identity(foreign_owner))["Body"] == foreign  # left alone
    assert tasks == {identity(s): tasks[identity(s)] for s in sessions}
    assert all(tasks[identity(s)]["Body"] == resolve(s["spec"], SECRET_ENV) for s in sessions)
