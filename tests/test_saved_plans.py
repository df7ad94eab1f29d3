"""Saved plans: the reviewed plan is applied exactly, or refused as stale before any call."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from gitops_helpers import Workspace, session, workspace

__all__ = ["workspace"]


def test_reviewed_plan_applies_only_what_was_reviewed(workspace: Workspace) -> None:
    ws = workspace
    ws.declare(session("a"), session("b"))
    assert ws.run("apply", "sessions", "--auto-approve")[0] == 0
    ws.declare(session("a", temperature=0.9), session("b"), session("c"))
    code, out, _ = ws.run("plan", "sessions", "--out", "plan.json", "--detailed-exitcode")
    assert code == 2 and "Plan: 1 to start, 1 to restart" in out
    # The files move on after the review: none of this may be applied from plan.json.
    ws.declare(session("a", temperature=0.1), session("d"))
    code, out, _ = ws.run("apply", "plan.json", "--auto-approve")
    assert code == 0, out
    assert ws.task_ids() == {"a", "b", "c"}
    body = next(t["Body"] for t in ws.emulator.tasks() if t["TaskId"] == "a")
    assert body["Config"]["LLMConfig"]["Temperature"] == 0.9
    assert body["Config"]["LLMConfig"]["APIKey"] == "llm-key-value-1"


def test_plan_is_stale_once_the_serial_moves(workspace: Workspace) -> None:
    ws = workspace
    ws.declare(session("a"))
    assert ws.run("plan", "sessions", "--out", "plan.json")[0] == 0
    assert ws.run("apply", "sessions", "--auto-approve")[0] == 0
    before = ws.calls()
    code, _, err = ws.run("apply", "plan.json", "--auto-approve")
    assert code == 1 and "stale" in err and "serial" in err
    assert ws.calls() == before


def test_plan_is_stale_for_another_lineage(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = workspace
    ws.declare(session("a"))
    assert ws.run("plan", "sessions", "--out", "plan.json")[0] == 0
    monkeypatch.setenv("RECONCILER_STATE", str(ws.root / "other" / "state.db"))
    code, _, err = ws.run("apply", "plan.json", "--auto-approve")
    assert code == 1 and "stale" in err and "lineage" in err
    assert ws.calls() == 0


def test_plan_is_stale_when_too_old(workspace: Workspace) -> None:
    ws = workspace
    ws.declare(session("a"))
    assert ws.run("plan", "sessions", "--out", "plan.json")[0] == 0
    document = json.loads(Path("plan.json").read_text())
    document["created_at"] = "2020-01-01T00:00:00Z"
    # Signed again with the state's key, as only someone who can read the state could.
    from reconciler.core.plan_signature import signed
    from reconciler.state.sqlite import SqliteStateStore

    with SqliteStateStore(ws.root / "state" / "state.db") as store:
        document = signed(document, store.meta().fingerprint_key)
    Path("plan.json").write_text(json.dumps(document))
    code, _, err = ws.run("apply", "plan.json", "--auto-approve")
    assert code == 1 and "stale" in err and "RECONCILER_PLAN_MAX_AGE" in err
    assert ws.calls() == 0


def test_a_plan_with_a_literal_secret_is_not_saved(workspace: Workspace) -> None:
    ws = workspace
    ws.declare(session("a", api_key="literal-api-key-value"))
    code, out, err = ws.run("plan", "sessions", "--out", "plan.json")
    assert code == 1
    assert "sessions/sessions.json: /sessions/0/spec/Config/LLMConfig/APIKey:" in err
    assert "literal secret" in err
    assert not Path("plan.json").exists()
    assert "literal-api-key-value" not in out + err


def test_detailed_exitcode(workspace: Workspace) -> None:
    ws = workspace
    ws.declare(session("a"))
    assert ws.run("plan", "sessions", "--detailed-exitcode")[0] == 2
    assert ws.run("apply", "sessions", "--auto-approve")[0] == 0
    assert ws.run("plan", "sessions", "--detailed-exitcode")[0] == 0
    (ws.manifests / "broken.json").write_text("{")
    assert ws.run("plan", "sessions", "--detailed-exitcode")[0] == 1


def test_plan_json_follows_the_plan_schema(workspace: Workspace) -> None:
    from jsonschema import Draft7Validator

    from reconciler.schema_files import PLAN_SCHEMA, load_schema

    ws = workspace
    ws.declare(session("a"), session("b"))
    assert ws.run("apply", "sessions", "--auto-approve")[0] == 0
    ws.declare(session("a", temperature=0.8), session("c"))
    code, out, _ = ws.run("plan", "sessions", "--format", "json")
    assert code == 0
    document = json.loads(out)
    Draft7Validator(load_schema(PLAN_SCHEMA)).validate(document)
    kinds = {action["name"]: action["kind"] for action in document["actions"]}
    assert kinds == {"a": "replace", "b": "delete", "c": "create"}
