"""Alibaba Cloud sessions under chaos and under SIGKILL: exactly one live instance per desired
session, none for removed ones, and a prune of everything afterwards leaves none live.

Aliyun's Start is not idempotent and its answer carries the only handle (the InstanceId), so a
lost answer (dropped connection, late 504, a killed run) leaves an instance nobody can address.
The reconciler settles it by starting again into the same channel with a new attempt (the
emulator, like ARTC, pushes the earlier agent out of its seat) and listing the session's owner
tag. These tests count the live instances per seat, not per record.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from random import Random
from typing import Any

import pytest
from apply_helpers import Workspace, aliyun_session, emulator_server, kill_repeatedly

from reconciler.emulator.faults import Faults

MAX_RUNS = 6
CHAOS = dict(
    error_500_rate=0.05,
    error_503_rate=0.05,
    error_429_rate=0.05,
    lost_response_rate=0.05,
    late_504_rate=0.05,
)


def seats(ws: Workspace) -> Counter[tuple[str, str]]:
    """How many live instances sit on each (ChannelId, AgentUserId)."""
    return Counter(
        (i["RuntimeConfig"]["ChannelId"], i["RuntimeConfig"]["AgentUserId"])
        for i in ws.emulator.aliyun.live_instances()
    )


def check_converged(ws: Workspace, sessions: list[dict[str, Any]]) -> None:
    wanted = {
        (s["spec"]["RuntimeConfig"]["ChannelId"], s["spec"]["RuntimeConfig"]["AgentUserId"])
        for s in sessions
    }
    live = seats(ws)
    assert set(live) == wanted and set(live.values()) <= {1}, live
    assert ws.pending() == []
    by_id = {i["InstanceId"] for i in ws.emulator.aliyun.live_instances()}
    records = ws.records()
    assert sorted(r["name"] for r in records) == sorted(s["name"] for s in sessions)
    assert {r["provider_ids"]["InstanceId"] for r in records} == by_id
    plan = ws.plan_exit()
    assert plan.code == 0, str(plan)


def converge(ws: Workspace, sessions: list[dict[str, Any]], *extra: str) -> None:
    ws.declare(sessions)
    for _ in range(MAX_RUNS):
        result = ws.apply(*extra)
        assert result.code in (0, 1, 3), str(result)
        if result.code == 0:
            break
    assert result.code == 0, f"not converged in {MAX_RUNS} runs:\n{result}"


@pytest.fixture
def chaos(tmp_path: Path) -> Iterator[Workspace]:
    with emulator_server(Faults(**CHAOS, seed=20261203)) as server:
        yield Workspace(tmp_path, server, extra={"max_attempts": "3", "max_retry_seconds": "2"})


@pytest.fixture
def slow(tmp_path: Path) -> Iterator[Workspace]:
    with emulator_server(Faults(latency=0.02)) as server:
        yield Workspace(tmp_path, server, extra={"parallelism": "8"})


def test_aliyun_sessions_converge_under_chaos_and_a_prune_leaves_none(chaos: Workspace) -> None:
    sessions = [aliyun_session(f"desk-{i:02d}") for i in range(60)]
    converge(chaos, sessions)
    outcomes = chaos.emulator.aliyun.calls()["by_outcome"]
    assert outcomes.get("lost_response", 0) > 0 and outcomes.get("GatewayTimeout", 0) > 0
    changed = [
        aliyun_session(s["name"], prompt="You are the concierge.") if i % 4 == 1 else s
        for i, s in enumerate(sessions)
        if i % 4 != 0
    ]
    converge(chaos, changed, "--max-stops", "100")
    chaos.emulator.set_faults(Faults())
    check_converged(chaos, changed)
    chaos.declare([])
    assert chaos.apply("--allow-empty", "--max-stops", "100").code == 0
    assert seats(chaos) == Counter() and chaos.records() == []


def test_sigkill_loop_leaves_exactly_one_live_instance_per_session(slow: Workspace) -> None:
    sessions = [aliyun_session(f"kiosk-{i:03d}") for i in range(80)]
    slow.declare(sessions)
    aliyun_calls = lambda: int(slow.emulator.aliyun.calls()["total"])  # noqa: E731
    pending = kill_repeatedly(slow, 5, Random(7), calls=aliyun_calls)
    assert any(pending), "no kill landed while a call was in flight"
    result = slow.run("apply", str(slow.manifests), "--auto-approve")
    assert result.code == 0, str(result)
    check_converged(slow, sessions)
    # Kill again while removing half and changing a quarter in place.
    second = [
        aliyun_session(s["name"], greeting="Good evening.") if i % 2 else s
        for i, s in enumerate(sessions)
        if i % 4 != 0
    ]
    slow.declare(second)
    kill_repeatedly(slow, 3, Random(11), "--max-stops", "100", calls=aliyun_calls)
    result = slow.run("apply", str(slow.manifests), "--auto-approve", "--max-stops", "100")
    assert result.code == 0, str(result)
    check_converged(slow, second)
    slow.declare([])
    assert slow.apply("--allow-empty", "--max-stops", "100").code == 0
    assert seats(slow) == Counter() and slow.records() == []
