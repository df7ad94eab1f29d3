"""Issue #11 items 6 and 11: what a plan considers.

Item 6: a protected session whose declaration was removed is kept running (Argo CD's
Prune=false) and does not block the rest of the plan. Item 11: `-l` / `--target` limit a plan to
some sessions, and a plan says when the paths given hold only part of what the state tracks.

Everything is real: the CLI runs as a subprocess (`python -m reconciler`), the emulator is an
HTTP server on 127.0.0.1 and the state a SQLite file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from apply_helpers import Workspace, emulator_server
from apply_helpers import session as full_session


@pytest.fixture
def ws(tmp_path: Path) -> Iterator[Workspace]:
    with emulator_server() as emulator:
        yield Workspace(tmp_path, emulator)


def session(name: str, **options: Any) -> dict[str, Any]:
    """A session a plan can be saved for: its only literal secret (a signature) removed."""
    entry = full_session(name, **options)
    del entry["spec"]["Config"]["SubtitleConfig"]
    return entry


def calls_by_action(ws: Workspace) -> dict[str, int]:
    by_action: dict[str, int] = ws.emulator.calls()["by_action"]
    return dict(by_action)


def task_ids(ws: Workspace) -> set[str]:
    return {task["TaskId"] for task in ws.emulator.tasks()}


def converge(ws: Workspace, sessions: list[dict[str, Any]]) -> None:
    ws.declare(sessions)
    result = ws.apply(here=False)
    assert result.code == 0, str(result)


# -- item 6: a protected session no longer declared is kept, and blocks nothing ------------

KEPT = "kept: protected (no longer declared)"


def test_a_removed_protected_session_is_kept_and_the_rest_applies(ws: Workspace) -> None:
    converge(ws, [session("vip", protect=True), session("a"), session("b")])
    ws.declare([session("a", temperature=0.9), session("b"), session("c")])
    before = calls_by_action(ws)
    result = ws.apply(here=False)
    assert result.code == 0, str(result)
    assert "  = keep vip  (volcengine " in result.out
    assert f"      {KEPT}\n" in result.out
    assert (
        "Plan: 1 to start, 1 to restart (cuts 1 live conversation). Kept: 1 protected "
        "session(s) no longer declared keep running (vip); to stop one, declare it with "
        '"protect": false, apply, then remove it.'
    ) in result.out
    assert "Refused" not in result.out
    after = calls_by_action(ws)
    # a restarted (stop + start), c started; vip never stopped.
    assert after.get("StopVoiceChat", 0) - before.get("StopVoiceChat", 0) == 1
    assert after.get("StartVoiceChat", 0) - before.get("StartVoiceChat", 0) == 2
    assert task_ids(ws) == {"task-vip", "task-a", "task-b", "task-c"}
    assert [r["name"] for r in ws.records()] == ["a", "b", "c", "vip"]


def test_a_kept_session_is_not_a_change_and_shows_in_every_format(ws: Workspace) -> None:
    converge(ws, [session("vip", protect=True), session("a")])
    ws.declare([session("a")])
    text = ws.run("plan", "desired", "--detailed-exitcode")
    assert text.code == 0, str(text)  # nothing to change: exit 0, not 2
    assert KEPT in text.out and "No changes." in text.out

    as_json = ws.run("plan", "desired", "--format", "json")
    assert as_json.code == 0, str(as_json)
    document = json.loads(as_json.out)
    kept = [a for a in document["actions"] if a["name"] == "vip"]
    assert [(a["kind"], a["reason"]) for a in kept] == [("keep", KEPT)]
    assert document["summary"]["keep"] == 1 and document["violations"] == []
    from jsonschema import Draft7Validator

    from reconciler.schema_files import PLAN_SCHEMA, load_schema

    Draft7Validator(load_schema(PLAN_SCHEMA)).validate(document)

    markdown = ws.run("plan", "desired", "--format", "markdown")
    assert markdown.code == 0, str(markdown)
    assert "| kept: protected (no longer declared) | 1 |" in markdown.out
    assert "- `=` **keep** `vip`" in markdown.out and KEPT in markdown.out


def test_a_saved_plan_keeps_the_protected_session_too(ws: Workspace) -> None:
    converge(ws, [session("vip", protect=True), session("a")])
    ws.declare([session("a"), session("b")])
    assert ws.run("plan", "desired", "--out", "plan.json").code == 0
    result = ws.run("apply", "plan.json", "--auto-approve")
    assert result.code == 0, str(result)
    assert KEPT in result.out and "Kept: 1 protected session(s)" in result.out
    assert task_ids(ws) == {"task-vip", "task-a", "task-b"}


def test_the_empty_desired_guard_counts_only_real_stops(ws: Workspace) -> None:
    converge(ws, [session("vip", protect=True), session("a")])
    ws.declare([])
    refused = ws.apply(here=False)
    assert refused.code == 1, str(refused)
    assert "the desired set is empty but 1 session(s) are recorded as running" in refused.out
    # Only the protected one left: nothing would be stopped, so nothing to guard against.
    assert ws.apply("--allow-empty", here=False).code == 0
    assert task_ids(ws) == {"task-vip"}
    again = ws.apply(here=False)
    assert again.code == 0, str(again)
    assert KEPT in again.out and "Refused" not in again.out
    assert task_ids(ws) == {"task-vip"}


def test_protection_still_refuses_a_restart(ws: Workspace) -> None:
    converge(ws, [session("vip", protect=True)])
    ws.declare([session("vip", protect=True, temperature=0.1)])
    before = calls_by_action(ws)
    refused = ws.apply(here=False)
    assert refused.code == 1, str(refused)
    assert 'session "vip" is protected: refusing to restart it' in refused.out
    assert calls_by_action(ws) == before
