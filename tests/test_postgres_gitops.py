"""GitOps with a shared PostgreSQL state: two runners see one truth, one apply at a time, a
killed apply blocks nobody, and no secret reaches the database."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from gitops_helpers import ACCESS_KEY, SECRET_KEY, Workspace, session
from pg_helpers import postgres_url, state_url, throwaway_schema

from reconciler.emulator.server import EmulatorServer
from reconciler.emulator.volcengine import Faults
from reconciler.state.postgres import PostgresStateStore


@pytest.fixture
def pg_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    url = postgres_url()
    with throwaway_schema(url) as schema:
        monkeypatch.setenv("RECONCILER_STATE", state_url(url, schema))
        yield url, schema


@pytest.fixture
def pg_workspace(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    pg_state: tuple[str, str],
) -> Iterator[Workspace]:
    with EmulatorServer(access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY) as emulator:
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("RECONCILER_VOLCENGINE__ENDPOINT", emulator.url)
        monkeypatch.setenv("RECONCILER_VOLCENGINE__ACCESS_KEY_ID", ACCESS_KEY)
        monkeypatch.setenv("RECONCILER_VOLCENGINE__SECRET_ACCESS_KEY", SECRET_KEY)
        monkeypatch.setenv("LLM_KEY", "pg-llm-key-value")
        monkeypatch.setenv("TTS_TOKEN", "pg-tts-token-value")
        yield Workspace(tmp_path, emulator, capsys)


def dump_schema(url: str, schema: str) -> str:
    with psycopg.connect(url) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                (schema,),
            )
        ]
        rows = []
        for table in tables:
            rows += [repr(r) for r in conn.execute(f'SELECT * FROM "{schema}"."{table}"')]
    return "\n".join(rows)


def test_plan_apply_rotate_on_postgres_leaks_nothing_and_two_checkouts_agree(
    pg_workspace: Workspace, pg_state: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = pg_workspace
    ws.declare(session("a"), session("b"))
    assert ws.run("plan", "sessions", "--out", "plan.json")[0] == 0
    assert ws.run("apply", "plan.json", "--auto-approve")[0] == 0
    # A second checkout on another runner: same database, its own working directory.
    other = ws.root / "other-runner"
    other.mkdir()
    (other / "sessions").mkdir()
    (other / "sessions" / "s.json").write_text((ws.manifests / "sessions.json").read_text())
    monkeypatch.chdir(other)
    code, out, _ = ws.run("plan", "sessions", "--detailed-exitcode")
    assert code == 0 and "No changes" in out
    monkeypatch.setenv("LLM_KEY", "pg-llm-key-rotated")
    code, out, _ = ws.run("plan", "sessions")
    assert "(sensitive value changed)" in out
    assert ws.run("apply", "sessions", "--auto-approve")[0] == 0
    monkeypatch.chdir(ws.root)
    assert ws.run("plan", "sessions", "--detailed-exitcode")[0] == 0
    bodies = {t["TaskId"]: t["Body"] for t in ws.emulator.tasks()}
    assert bodies["a"]["Config"]["LLMConfig"]["APIKey"] == "pg-llm-key-rotated"
    dump = dump_schema(*pg_state)
    assert "CustomLLM" in dump  # the records are there, redacted
    for secret in ("pg-llm-key-value", "pg-llm-key-rotated", "pg-tts-token-value"):
        assert secret not in dump
        assert secret not in (ws.root / "plan.json").read_text()


def cli_env(emulator: EmulatorServer) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        RECONCILER_VOLCENGINE__ENDPOINT=emulator.url,
        RECONCILER_VOLCENGINE__ACCESS_KEY_ID=ACCESS_KEY,
        RECONCILER_VOLCENGINE__SECRET_ACCESS_KEY=SECRET_KEY,
        RECONCILER_PARALLELISM="1",
        LLM_KEY="k",
        TTS_TOKEN="t",
    )
    return env


def wait_for_holder(store: PostgresStateStore, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while store.lock_holder() is None:
        assert time.monotonic() < deadline, "the first apply never took the lock"
        time.sleep(0.05)


def test_concurrent_applies_one_refused_naming_the_holder_and_a_killed_holder_blocks_nobody(
    tmp_path: Path, pg_state: tuple[str, str]
) -> None:
    url, schema = pg_state
    manifests = tmp_path / "sessions"
    manifests.mkdir()
    sessions = [session(f"s{i}") for i in range(6)]
    (manifests / "s.json").write_text(json.dumps({"sessions": sessions}))
    slow = Faults(latency=0.4)
    with EmulatorServer(
        access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY, faults=slow
    ) as emulator:
        env = cli_env(emulator)
        command = [sys.executable, "-m", "reconciler", "apply", str(manifests), "--auto-approve"]
        first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        store = PostgresStateStore(url, schema=schema)
        try:
            wait_for_holder(store)
            second = subprocess.run(command, env=env, capture_output=True, text=True)
            assert second.returncode == 1
            assert f"pid {first.pid}" in second.stderr and "apply" in second.stderr
            assert "locked" in second.stderr
            first.send_signal(signal.SIGKILL)
            first.wait()
        finally:
            if first.poll() is None:
                first.kill()
            first.communicate()
            store.close()
        emulator.set_faults(Faults())
        third = subprocess.run(command, env=env, capture_output=True, text=True)
        assert third.returncode == 0, third.stderr
        assert {t["TaskId"] for t in emulator.tasks()} == {f"s{i}" for i in range(6)}
        plan = [sys.executable, "-m", "reconciler", "plan", str(manifests), "--detailed-exitcode"]
        assert subprocess.run(plan, env=env, capture_output=True).returncode == 0
