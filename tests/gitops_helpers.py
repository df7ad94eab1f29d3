"""A small GitOps workspace for tests: manifests on disk, the emulator, the CLI in-process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from reconciler.cli import main
from reconciler.emulator.server import EmulatorServer

APP_ID = "661e4b8f2f1d3c0123456789"
ACCESS_KEY = "AKLTgitopstest"
SECRET_KEY = "gitops-secret-access-key-0451"


def spec(task: str, *, temperature: float = 0.5, api_key: str = "${env:LLM_KEY}") -> dict[str, Any]:
    return {
        "AppId": APP_ID,
        "RoomId": f"room-{task}",
        "TaskId": task,
        "AgentConfig": {"TargetUserId": [f"user-{task}"], "UserId": f"bot-{task}"},
        "Config": {
            "ASRConfig": {
                "Provider": "volcano",
                "ProviderParams": {"AppId": "1", "Mode": "bigmodel"},
            },
            "TTSConfig": {
                "Provider": "volcano",
                "ProviderParams": {"app": {"appid": "1", "token": "${env:TTS_TOKEN}"}},
            },
            "LLMConfig": {
                "Mode": "CustomLLM",
                "Url": "https://llm.example.com/chat",
                "APIKey": api_key,
                "Temperature": temperature,
            },
        },
    }


def session(name: str, **kw: Any) -> dict[str, Any]:
    return {"name": name, "provider": "volcengine", "spec": spec(name, **kw)}


@dataclass
class Workspace:
    root: Path
    emulator: EmulatorServer
    capsys: pytest.CaptureFixture[str]

    @property
    def manifests(self) -> Path:
        return self.root / "sessions"

    def declare(self, *sessions: dict[str, Any]) -> None:
        self.manifests.mkdir(exist_ok=True)
        for old in self.manifests.iterdir():
            old.unlink()
        (self.manifests / "sessions.json").write_text(json.dumps({"sessions": list(sessions)}))

    def run(self, *argv: str) -> tuple[int, str, str]:
        """The CLI in-process; returns (exit code, stdout, stderr)."""
        self.capsys.readouterr()
        code = main(list(argv))
        out, err = self.capsys.readouterr()
        return code, out, err

    def calls(self) -> int:
        return int(self.emulator.calls()["total"])

    def task_ids(self) -> set[str]:
        return {task["TaskId"] for task in self.emulator.tasks()}


@pytest.fixture
def workspace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[Workspace]:
    with EmulatorServer(access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY) as emulator:
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("RECONCILER_STATE", str(tmp_path / "state" / "state.db"))
        monkeypatch.setenv("RECONCILER_VOLCENGINE__ENDPOINT", emulator.url)
        monkeypatch.setenv("RECONCILER_VOLCENGINE__ACCESS_KEY_ID", ACCESS_KEY)
        monkeypatch.setenv("RECONCILER_VOLCENGINE__SECRET_ACCESS_KEY", SECRET_KEY)
        monkeypatch.setenv("LLM_KEY", "llm-key-value-1")
        monkeypatch.setenv("TTS_TOKEN", "tts-token-value-1")
        yield Workspace(tmp_path, emulator, capsys)
