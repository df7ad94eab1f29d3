"""Two `reconciler watch` replicas on one PostgreSQL state: one leads, the other stands by and
takes over when the leader is killed or frozen; a thawed former leader makes no call."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from apply_helpers import APP, Workspace, emulator_server, running, session
from daemon_helpers import WatchProcess, signed_volcengine_event, wait_until
from pg_helpers import postgres_url, state_url, throwaway_schema
from prometheus_client.parser import text_string_to_metric_families

LEASE = "2"


@dataclass
class PgWorkspace(Workspace):
    """A workspace whose state is a PostgreSQL schema of its own."""

    pg_state: str = ""

    def env(self, **overrides: str) -> dict[str, str]:
        return {**super().env(**overrides), "RECONCILER_STATE": self.pg_state}


@pytest.fixture
def ws(tmp_path: Path) -> Iterator[PgWorkspace]:
    url = postgres_url()
    with throwaway_schema(url) as schema, emulator_server() as server:
        yield PgWorkspace(tmp_path, server, pg_state=state_url(url, schema))


@pytest.fixture
def replicas(ws: Workspace) -> Iterator[list[WatchProcess]]:
    started: list[WatchProcess] = []
    yield started
    for daemon in started:
        daemon.kill()


def replica(ws: Workspace, started: list[WatchProcess]) -> WatchProcess:
    daemon = WatchProcess([ws.manifests], ws.env(), ws.root, "--lease", LEASE)
    started.append(daemon)
    return daemon


def gauge(daemon: WatchProcess, name: str) -> float | None:
    for family in text_string_to_metric_families(daemon.metrics()):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    return None


def requests_made(daemon: WatchProcess) -> float:
    total = 0.0
    for family in text_string_to_metric_families(daemon.metrics()):
        for sample in family.samples:
            if sample.name == "reconciler_provider_requests_total":
                total += sample.value
    return total


def leader_of(daemons: list[WatchProcess]) -> WatchProcess:
    wait_until(
        lambda: sum(gauge(d, "reconciler_leader") == 1 for d in daemons) == 1,
        what="exactly one leader",
    )
    return next(d for d in daemons if gauge(d, "reconciler_leader") == 1)


def test_exactly_one_of_two_replicas_leads_and_the_standby_is_ready(
    ws: Workspace, replicas: list[WatchProcess]
) -> None:
    ws.declare([session("a"), session("b")])
    first, second = replica(ws, replicas), replica(ws, replicas)
    leader = leader_of([first, second])
    standby = second if leader is first else first
    leader.wait_for_pass(1)
    assert {t[2] for t in running(ws.emulator)} == {"task-a", "task-b"}
    time.sleep(1.5)  # a few standby attempts
    assert gauge(standby, "reconciler_leader") == 0
    assert standby.passes() == [] and requests_made(standby) == 0
    assert standby.get("/readyz").status_code == 200
    assert standby.get("/healthz").status_code == 200
    assert standby.status()["leader"] is False
    # A genuine callback reaching the standby is refused with 503, so the cloud delivers it
    # again (a Service may send it to the leader); the leader takes it.
    event = signed_volcengine_event(APP, "room-a", "task-a")
    assert standby.post("/callbacks/volcengine", event).status_code == 503
    assert leader.post("/callbacks/volcengine", event).status_code == 200
    assert leader.stop() == 0 and standby.stop() == 0


def test_sigkill_of_the_leader_hands_over(ws: Workspace, replicas: list[WatchProcess]) -> None:
    ws.declare([session("a")])
    first, second = replica(ws, replicas), replica(ws, replicas)
    leader = leader_of([first, second])
    standby = second if leader is first else first
    leader.wait_for_pass(1)
    leader.signal(signal.SIGKILL)
    leader.process.wait(10)

    standby.wait_for_log("leading", timeout=15)
    ws.declare([session("a"), session("b")])
    standby.wait_for_log("action", lambda line: line["session"] == "b")
    assert {t[2] for t in running(ws.emulator)} == {"task-a", "task-b"}
    assert int(ws.emulator.calls()["by_action"]["StartVoiceChat"]) == 2, "no Start repeated"
    assert standby.stop() == 0


def test_a_frozen_leader_is_replaced_and_makes_no_call_once_thawed(
    ws: Workspace, replicas: list[WatchProcess]
) -> None:
    ws.declare([session("a")])
    first, second = replica(ws, replicas), replica(ws, replicas)
    leader = leader_of([first, second])
    standby = second if leader is first else first
    leader.wait_for_pass(1)
    before = requests_made(leader)

    leader.signal(signal.SIGSTOP)
    standby.wait_for_log("leading", timeout=20)  # within the lease, plus the server's check
    ws.declare([session("a"), session("b")])  # the frozen one's watcher queues this too
    standby.wait_for_log("action", lambda line: line["session"] == "b")

    leader.signal(signal.SIGCONT)
    leader.wait_for_log("lost the leadership: standing by", timeout=20)
    wait_until(lambda: gauge(leader, "reconciler_leader") == 0, what="the thawed one stands by")
    assert requests_made(leader) == before, "a replica that lost the lease made a call"
    assert int(ws.emulator.calls()["by_action"]["StartVoiceChat"]) == 2
    assert leader.stop() == 0 and standby.stop() == 0
