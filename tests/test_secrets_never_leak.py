"""No secret value — referenced or literal in an x-sensitive field — reaches an output, a log
line, a saved plan or the state, through a full plan / apply / rotate cycle; the cloud gets them."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from gitops_helpers import Workspace, session, workspace

__all__ = ["workspace"]

ROTATED = "llm-key-value-2-rotated"
LITERAL = "literal-llm-key-in-file-77"


def state_bytes(root: Path) -> bytes:
    return b"".join(path.read_bytes() for path in sorted((root / "state").glob("state.db*")))


def test_full_cycle_leaks_no_secret(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    ws = workspace
    secrets = ["llm-key-value-1", "tts-token-value-1", ROTATED, LITERAL]
    outputs: list[str] = []

    def run(*argv: str) -> int:
        code, out, err = ws.run(*argv)
        outputs.extend([out, err])
        return code

    ws.declare(session("a"), session("b"))
    assert run("validate", "sessions") == 0
    for fmt in ("text", "json", "markdown"):
        assert run("plan", "sessions", "--format", fmt) == 0
    assert run("plan", "sessions", "--out", "plan.json") == 0
    assert run("apply", "plan.json", "--auto-approve") == 0

    monkeypatch.setenv("LLM_KEY", ROTATED)
    code, out, _ = ws.run("plan", "sessions")
    outputs.append(out)
    assert code == 0 and "(sensitive value changed)" in out and "Plan: 2 to restart" in out
    for fmt in ("json", "markdown"):
        assert run("plan", "sessions", "--format", fmt) == 0
    assert run("plan", "sessions", "--out", "rotated.json") == 0
    assert run("apply", "rotated.json", "--auto-approve") == 0
    bodies = {t["TaskId"]: t["Body"] for t in ws.emulator.tasks()}
    assert bodies["a"]["Config"]["LLMConfig"]["APIKey"] == ROTATED
    assert (
        bodies["a"]["Config"]["TTSConfig"]["ProviderParams"]["app"]["token"] == "tts-token-value-1"
    )

    ws.declare(session("a"), session("b", api_key=LITERAL))
    for fmt in ("text", "json", "markdown"):
        assert run("plan", "sessions", "--format", fmt) == 0
    assert run("apply", "sessions", "--auto-approve") == 0
    bodies = {t["TaskId"]: t["Body"] for t in ws.emulator.tasks()}
    assert bodies["b"]["Config"]["LLMConfig"]["APIKey"] == LITERAL
    assert run("state", "list") == 0
    assert run("state", "list", "--format", "json") == 0
    assert run("state", "show", "b") == 0
    assert run("plan", "sessions", "--detailed-exitcode") == 0

    artifacts = {
        "outputs": "\n".join(outputs).encode(),
        "logs": caplog.text.encode(),
        "plan.json": (ws.root / "plan.json").read_bytes(),
        "rotated.json": (ws.root / "rotated.json").read_bytes(),
        "state": state_bytes(ws.root),
    }
    for name, data in artifacts.items():
        for secret in secrets:
            assert secret.encode() not in data, f"{secret} leaked into {name}"
    assert b"${env:LLM_KEY}" in artifacts["plan.json"]  # references are kept as written
