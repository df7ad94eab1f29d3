"""Shared parts of the apply end-to-end, chaos and crash tests.

Everything here is real: manifests are files, the emulator is an HTTP server on 127.0.0.1, the
state is a SQLite file, and `run_cli` runs `python -m reconciler` as a subprocess. `Workspace`
bundles one test's emulator, state file and environment, and runs the CLI either as a subprocess
(`run`) or in this process (`run_here`, through `reconciler.cli.main`, faster for long loops).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from random import Random
from typing import Any

import pytest

from reconciler.emulator.server import DEFAULT_ARTC_APP_ID, DEFAULT_ARTC_APP_KEY, EmulatorServer
from reconciler.emulator.volcengine import Faults
from reconciler.providers.volcengine.client import VolcengineClient

AK = "AKLTapplytests"
SK = "apply-tests-secret-access-key"
APP = "661e4b8f2f1d3c0123456789"
# Values the ${env:...} references of `session()` resolve to: they must reach the cloud and
# never the state, a plan or the output.
SECRET_ENV = {
    "TEST_LLM_API_KEY": "sk-live-llm-0123456789abcdef",
    "TEST_TTS_TOKEN": "tts-token-fedcba9876543210",
}
# A sensitive field given literally (not as a reference) must not be stored either.
LITERAL_SIGNATURE = "literal-signature-5a5a5a5a5a"
SECRET_VALUES = (*SECRET_ENV.values(), LITERAL_SIGNATURE)
REPO = Path(__file__).resolve().parent.parent


def session(
    name: str,
    *,
    room: str | None = None,
    task: str | None = None,
    prompt: str = "You are a helpful voice assistant.",
    temperature: float = 0.5,
    protect: bool = False,
    labels: Mapping[str, str] | None = None,
    announcements: Sequence[Mapping[str, Any]] = (),
    llm_key: str = "${env:TEST_LLM_API_KEY}",
) -> dict[str, Any]:
    """One valid Volcengine session whose LLM key and TTS token are ${env:...} references."""
    entry: dict[str, Any] = {
        "name": name,
        "provider": "volcengine",
        "spec": {
            "AppId": APP,
            "RoomId": room or f"room-{name}",
            "TaskId": task or f"task-{name}",
            "Config": {
                "ASRConfig": {
                    "Provider": "volcano",
                    "ProviderParams": {"Mode": "smallmodel", "AppId": "4120736521"},
                },
                "TTSConfig": {
                    "Provider": "volcano",
                    "ProviderParams": {
                        "app": {"appid": "4120736521", "token": "${env:TEST_TTS_TOKEN}"}
                    },
                },
                "LLMConfig": {
                    "Mode": "CustomLLM",
                    "Url": "https://llm.example.com/v1/chat",
                    "APIKey": llm_key,
                    "Temperature": temperature,
                    "SystemMessages": [prompt],
                },
                "SubtitleConfig": {
                    "ServerMessageUrl": "https://hooks.example.com/subtitles",
                    "ServerMessageSignature": LITERAL_SIGNATURE,
                },
            },
            "AgentConfig": {"TargetUserId": [f"user-{name}"], "UserId": f"bot-{name}"},
        },
    }
    if protect:
        entry["protect"] = True
    if labels:
        entry["labels"] = dict(labels)
    if announcements:
        entry["announcements"] = [dict(a) for a in announcements]
    return entry


ALIYUN_AGENT = "39f8e0bc005e4f309379701645f4a1b2"


def aliyun_session(
    name: str,
    *,
    greeting: str = "Hello!",
    voice: str = "zhixiaoxia",
    prompt: str = "You are the front desk.",
    channel: str | None = None,
    announcements: Sequence[Mapping[str, Any]] = (),
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """One valid Alibaba Cloud AI-agent session (its AuthToken is made by the reconciler)."""
    entry: dict[str, Any] = {
        "name": name,
        "provider": "aliyun",
        "spec": {
            "AIAgentId": ALIYUN_AGENT,
            "RuntimeConfig": {
                "ChannelId": channel or f"ch-{name}",
                "AgentUserId": f"agent-{name}",
            },
            "AgentConfig": {
                "Greeting": greeting,
                "TtsConfig": {"VoiceId": voice},
                "LlmConfig": {"LlmSystemPrompt": prompt},
            },
            "UserData": {"tenant": "acme"},
        },
    }
    if announcements:
        entry["announcements"] = [dict(a) for a in announcements]
    if labels:
        entry["labels"] = dict(labels)
    return entry


def live_instances(emulator: EmulatorServer) -> dict[tuple[str, str], dict[str, Any]]:
    """The emulator's live Alibaba Cloud instances by (ChannelId, AgentUserId)."""
    return {
        (i["RuntimeConfig"]["ChannelId"], i["RuntimeConfig"]["AgentUserId"]): i
        for i in emulator.aliyun.live_instances()
    }


def write_manifest(path: Path, sessions: Iterable[Mapping[str, Any]]) -> Path:
    """Write `{"sessions": [...]}` to `path` (replacing it) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps({"sessions": list(sessions)}, indent=1), encoding="utf-8")
    os.replace(temporary, path)
    return path


def resolve(value: Any, environ: Mapping[str, str]) -> Any:
    """The spec as the cloud must receive it: every ${env:NAME} replaced by its value."""
    if isinstance(value, str) and value.startswith("${env:") and value.endswith("}"):
        return environ[value[len("${env:") : -1]]
    if isinstance(value, dict):
        return {key: resolve(item, environ) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve(item, environ) for item in value]
    return value


def identity(entry: Mapping[str, Any]) -> tuple[str, str, str]:
    spec = entry["spec"]
    return (spec["AppId"], spec["RoomId"], spec["TaskId"])


def running(emulator: EmulatorServer) -> dict[tuple[str, str, str], dict[str, Any]]:
    """The emulator's running tasks by (AppId, RoomId, TaskId)."""
    return {(t["AppId"], t["RoomId"], t["TaskId"]): t for t in emulator.tasks()}


def assert_cloud_matches(
    emulator: EmulatorServer,
    sessions: Iterable[Mapping[str, Any]],
    environ: Mapping[str, str] = SECRET_ENV,
) -> None:
    """Exactly one running task per desired session, started with the resolved spec."""
    sessions = list(sessions)
    tasks = running(emulator)
    expected = {identity(entry): entry for entry in sessions}
    assert len(expected) == len(sessions), "the test declared two sessions with one identity"
    missing = sorted(set(expected) - set(tasks))
    orphans = sorted(set(tasks) - set(expected))
    assert not missing and not orphans, f"missing {missing[:5]}, orphans {orphans[:5]}"
    wrong = [
        key
        for key, entry in expected.items()
        if tasks[key]["Body"] != resolve(entry["spec"], environ)
    ]
    assert not wrong, f"{len(wrong)} task(s) run an outdated body, e.g. {wrong[:3]}"


def start_foreign_task(url: str, body: Mapping[str, Any]) -> None:
    """Someone else starts a task with this body: running, but not recorded in our state."""

    async def start() -> None:
        async with VolcengineClient(url, "cn-north-1", "2024-12-01", AK, SK) as client:
            await client.start(body)

    asyncio.run(start())


def ok_calls(emulator: EmulatorServer) -> int:
    """Calls that took effect and were answered (starts, stops, updates alike)."""
    return int(emulator.calls()["by_outcome"].get("ok", 0))


@contextlib.contextmanager
def emulator_server(faults: Faults | None = None) -> Iterator[EmulatorServer]:
    """A started emulator on a free port of 127.0.0.1 that accepts AK/SK (and only them)."""
    with EmulatorServer(access_key_id=AK, secret_access_key=SK, faults=faults) as server:
        yield server


def cli_env(
    emulator_url: str,
    state: Path,
    *,
    access_key_id: str = AK,
    secret_access_key: str = SK,
    **settings: str,
) -> dict[str, str]:
    """The variables a user sets to run the reconciler against the emulator.

    Extra keyword arguments become RECONCILER_<NAME> (e.g. parallelism="8").
    """
    env = {
        "RECONCILER_STATE": str(state),
        "RECONCILER_VOLCENGINE__ENDPOINT": emulator_url,
        "RECONCILER_VOLCENGINE__ACCESS_KEY_ID": access_key_id,
        "RECONCILER_VOLCENGINE__SECRET_ACCESS_KEY": secret_access_key,
        "RECONCILER_RATE_LIMIT": "10000",
        "RECONCILER_PARALLELISM": "16",
        "RECONCILER_MAX_ATTEMPTS": "10",
        "RECONCILER_MAX_RETRY_SECONDS": "10",
        "RECONCILER_VOLCENGINE__TIMEOUT": "10",
        # The emulator serves both clouds on one port, with the same key pair.
        "RECONCILER_ALIYUN__ENDPOINT": emulator_url,
        "RECONCILER_ALIYUN__ACCESS_KEY_ID": access_key_id,
        "RECONCILER_ALIYUN__ACCESS_KEY_SECRET": secret_access_key,
        "RECONCILER_ALIYUN__ARTC_APP_ID": DEFAULT_ARTC_APP_ID,
        "RECONCILER_ALIYUN__ARTC_APP_KEY": DEFAULT_ARTC_APP_KEY,
        "RECONCILER_ALIYUN__TIMEOUT": "10",
        **SECRET_ENV,
    }
    env.update({f"RECONCILER_{name.upper()}": value for name, value in settings.items()})
    return env


def _child_environ(env: Mapping[str, str]) -> dict[str, str]:
    """The parent's environment without any RECONCILER_* or VOLC_* leaking in, plus `env`."""
    base = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("RECONCILER_", "VOLC_", "ALIBABA_CLOUD_")) and key not in SECRET_ENV
    }
    base.update(env)
    base["PYTHONUNBUFFERED"] = "1"
    return base


def run_cli(
    args: Sequence[str], env: Mapping[str, str], cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`python -m reconciler ARGS` in `cwd`, stdin not a terminal, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "reconciler", *args],
        env=_child_environ(env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def spawn_cli(args: Sequence[str], env: Mapping[str, str], cwd: Path) -> subprocess.Popen[str]:
    """Start `python -m reconciler ARGS` without waiting (for the kill tests)."""
    return subprocess.Popen(
        [sys.executable, "-m", "reconciler", *args],
        env=_child_environ(env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


@dataclass
class Result:
    code: int
    out: str
    err: str

    def __str__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.out}\n--- stderr\n{self.err}"


@dataclass
class Workspace:
    """One test's directory, state file, emulator and environment."""

    root: Path
    emulator: EmulatorServer
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def state(self) -> Path:
        return self.root / "state" / "state.db"

    @property
    def manifests(self) -> Path:
        return self.root / "desired"

    def env(self, **overrides: str) -> dict[str, str]:
        return cli_env(self.emulator.url, self.state, **{**self.extra, **overrides})

    def declare(self, sessions: Iterable[Mapping[str, Any]], name: str = "sessions.json") -> Path:
        return write_manifest(self.manifests / name, sessions)

    def run(self, *args: str, env: Mapping[str, str] | None = None) -> Result:
        """The CLI as a subprocess."""
        done = run_cli(args, env if env is not None else self.env(), self.root)
        return Result(done.returncode, done.stdout, done.stderr)

    def run_here(self, *args: str, env: Mapping[str, str] | None = None) -> Result:
        """The CLI in this process (`reconciler.cli.main`), with the same environment."""
        from reconciler.cli import main

        environ = env if env is not None else self.env()
        with pytest.MonkeyPatch.context() as patch:
            for key in list(os.environ):
                if key.startswith(("RECONCILER_", "VOLC_", "ALIBABA_CLOUD_")) or key in SECRET_ENV:
                    patch.delenv(key)
            for key, value in environ.items():
                patch.setenv(key, value)
            patch.chdir(self.root)
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main(list(args))
        return Result(code, out.getvalue(), err.getvalue())

    def apply(self, *extra: str, here: bool = True, env: Mapping[str, str] | None = None) -> Result:
        runner = self.run_here if here else self.run
        return runner("apply", str(self.manifests), "--auto-approve", *extra, env=env)

    def plan_exit(self, here: bool = True) -> Result:
        runner = self.run_here if here else self.run
        return runner("plan", str(self.manifests), "--detailed-exitcode")

    def records(self) -> list[dict[str, Any]]:
        result = self.run_here("state", "list", "--format", "json")
        assert result.code == 0, str(result)
        listing: list[dict[str, Any]] = json.loads(result.out)
        return listing

    def serial(self) -> int:
        from reconciler.state.sqlite import SqliteStateStore

        with SqliteStateStore(self.state) as store:
            return store.meta().serial

    def pending(self) -> list[Any]:
        from reconciler.state.sqlite import SqliteStateStore

        with SqliteStateStore(self.state) as store:
            return store.pending_intents()

    def state_bytes(self) -> bytes:
        """Every byte of the state: the database, its WAL and shared-memory files, the lock."""
        parent = self.state.parent
        if not parent.exists():
            return b""
        return b"".join(p.read_bytes() for p in sorted(parent.iterdir()) if p.is_file())


def kill_repeatedly(
    ws: Workspace,
    kills: int,
    rng: Random,
    *extra: str,
    calls: Callable[[], int] | None = None,
) -> list[int]:
    """Start `apply` as a subprocess and SIGKILL it mid-flight, `kills` times in a row.

    Even rounds kill once a random number of calls (1-20) reached the emulator since the run
    started (small numbers land inside the recovery of the previous kill); odd rounds kill a
    random delay (0-40 ms) after its first call. With 20 ms per call and 8 in flight, no round
    consumes more than ~30 calls, so every run is still busy when its moment comes. Returns
    how many intents each kill left pending. `calls` counts the calls that reached the cloud
    (default: the emulator's Volcengine side).
    """
    total = calls or (lambda: int(ws.emulator.calls()["total"]))
    pending: list[int] = []
    args = ["apply", str(ws.manifests), "--auto-approve", *extra]
    for round_ in range(kills):
        process = spawn_cli(args, ws.env(), ws.root)
        base = total()
        target = base + (rng.randint(1, 20) if round_ % 2 == 0 else 1)
        delay = 0.0 if round_ % 2 == 0 else rng.uniform(0.0, 0.04)
        safety = time.monotonic() + 60  # a stuck run is killed anyway, never waited on forever
        while process.poll() is None and total() < target and time.monotonic() < safety:
            time.sleep(0.001)
        if delay and process.poll() is None:
            time.sleep(delay)
        finished_by_itself = process.poll() is not None
        if not finished_by_itself:
            os.kill(process.pid, signal.SIGKILL)
        _, err = process.communicate(timeout=60)
        assert not finished_by_itself, f"round {round_}: the run ended before its kill:\n{err}"
        assert process.returncode == -signal.SIGKILL, err
        pending.append(len(ws.pending()))
    return pending
