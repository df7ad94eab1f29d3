"""Issue #11 items 7, 14a and 17: what plan and validate say, in the user's words.

- 7: an announcement added in the change that restarts a session is listed as not played, and
  apply does what the plan says (records it delivered, no UpdateVoiceChat call).
- 14a: numbers past 64 bits, or past Python's 4,300-digit limit, are one-line errors naming
  file, line where known, and pointer, in JSON, TOML and YAML alike.
- 17: values quoted in JSON spelling, no regex internals, duplicate keys at their object's
  pointer with a line, a literal secret in `defaults` reported once at `/defaults/...`.

Real parts only: `python -m reconciler` subprocesses, the emulator on 127.0.0.1, a SQLite state.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from apply_helpers import Workspace, emulator_server, session


@pytest.fixture
def ws(tmp_path: Path) -> Iterator[Workspace]:
    with emulator_server() as server:
        yield Workspace(tmp_path, server)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


MAINT = {"id": "maint-1121", "message": "We will restart for maintenance at 22:00."}
NOT_PLAYED = "> not played: maint-1121 (the restart starts a new conversation)"


# -- item 7: an announcement added with a restart ----------------------------------------------


def test_an_announcement_added_with_a_restart_is_listed_as_not_played_and_apply_agrees(
    ws: Workspace,
) -> None:
    ws.declare([session("a")])
    assert ws.apply(here=False).code == 0
    ws.declare([session("a", temperature=0.7, announcements=[MAINT])])

    text = ws.run("plan", str(ws.manifests))
    as_json = ws.run("plan", str(ws.manifests), "--format", "json")
    markdown = ws.run("plan", str(ws.manifests), "--format", "markdown")

    assert text.code == 0, str(text)
    lines = text.out.splitlines()
    replace_at = lines.index(next(line for line in lines if "-/+ replace a" in line))
    assert f"      {NOT_PLAYED}" in lines[replace_at:]
    assert "> announce maint-1121" not in text.out
    action = json.loads(as_json.out)["actions"][0]
    assert action["kind"] == "replace"
    assert action["announcements"] == []
    assert action["not_played"] == [{**MAINT, "interrupt_mode": 2}]
    assert f"  {NOT_PLAYED}" in markdown.out

    before = ws.emulator.calls()["by_action"]
    result = ws.run("apply", str(ws.manifests), "--auto-approve")

    assert result.code == 0, str(result)
    assert NOT_PLAYED in result.out  # the plan apply prints says the same
    after = ws.emulator.calls()["by_action"]
    assert after.get("UpdateVoiceChat", 0) == before.get("UpdateVoiceChat", 0)
    assert after.get("StartVoiceChat", 0) == before.get("StartVoiceChat", 0) + 1
    assert ws.records()[0]["announcements_delivered"] == ["maint-1121"]
    again = ws.run("plan", str(ws.manifests), "--detailed-exitcode")
    assert again.code == 0, str(again)
    assert "No changes." in again.out


def test_an_announcement_added_alone_is_still_played(ws: Workspace) -> None:
    ws.declare([session("a")])
    assert ws.apply(here=False).code == 0
    ws.declare([session("a", announcements=[MAINT])])

    result = ws.run("apply", str(ws.manifests), "--auto-approve")

    assert result.code == 0, str(result)
    assert "not played" not in result.out
    assert "> announce maint-1121" in result.out
    assert ws.emulator.calls()["by_action"].get("UpdateVoiceChat", 0) == 1
