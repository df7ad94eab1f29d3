"""Issue #11 items 2 and 3: a saved plan is authenticated, and recognised by its content.

Everything is real: the CLI runs as a subprocess (`python -m reconciler`), the emulator is an
HTTP server on 127.0.0.1 and the state a SQLite file.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from apply_helpers import APP, Workspace
from apply_helpers import session as full_session

from reconciler.core.plan_signature import has_valid_mac, plan_mac, signed
from reconciler.state.sqlite import SqliteStateStore


def session(name: str, **options: Any) -> dict[str, Any]:
    """A session a plan can be saved for: its only literal secret (a signature) removed."""
    entry = full_session(name, **options)
    del entry["spec"]["Config"]["SubtitleConfig"]
    return entry


def total_calls(ws: Workspace) -> int:
    return int(ws.emulator.calls()["total"])


def saved_plan(ws: Workspace, out: str = "plan.json") -> dict[str, Any]:
    result = ws.run("plan", "desired", "--out", out)
    assert result.code == 0, str(result)
    document: dict[str, Any] = json.loads((ws.root / out).read_text())
    return document


def rewrite(ws: Workspace, name: str, document: dict[str, Any]) -> None:
    (ws.root / name).write_text(json.dumps(document, indent=2))


# -- item 2: a saved plan is authenticated ---------------------------------------------------


def test_an_edited_desired_spec_is_refused_before_any_call(ws: Workspace) -> None:
    ws.declare([session("a", temperature=0.5)])
    document = saved_plan(ws)
    (action,) = document["actions"]
    action["desired"]["spec"]["Config"]["LLMConfig"]["Url"] = "https://evil.example.com/steal"
    rewrite(ws, "plan.json", document)
    result = ws.run("apply", "plan.json", "--auto-approve")
    assert result.code == 1, str(result)
    assert result.err.startswith("error: plan.json: the plan was modified after it was written")
    assert len(result.err.strip().splitlines()) == 1
    assert "Traceback" not in result.err
    assert total_calls(ws) == 0
    assert ws.emulator.tasks() == []
    assert ws.records() == []


def test_a_plan_without_mac_is_refused(ws: Workspace) -> None:
    ws.declare([session("a")])
    document = saved_plan(ws)
    del document["mac"]
    rewrite(ws, "plan.json", document)
    result = ws.run("apply", "plan.json", "--auto-approve")
    assert result.code == 1 and "modified after it was written" in result.err, str(result)
    assert total_calls(ws) == 0


def test_an_edit_anywhere_breaks_the_mac(ws: Workspace) -> None:
    ws.declare([session("a"), session("b")])
    assert ws.apply(here=False).code == 0
    ws.declare([session("a"), session("b", temperature=0.9)])
    document = saved_plan(ws)
    # Hide the restart from the reviewer: the summary no longer mentions it.
    document["summary"]["text"] = "No changes."
    rewrite(ws, "plan.json", document)
    before = total_calls(ws)
    result = ws.run("apply", "plan.json", "--auto-approve")
    assert result.code == 1 and "modified after it was written" in result.err, str(result)
    assert total_calls(ws) == before


def test_an_unmodified_plan_applies_and_its_mac_is_the_documented_one(ws: Workspace) -> None:
    ws.declare([session("a")])
    document = saved_plan(ws)
    assert document["mac"].startswith("hmac-sha256:")
    with SqliteStateStore(ws.state) as store:
        key = store.meta().fingerprint_key
    assert has_valid_mac(document, key)
    # The MAC is not keyed by the fingerprint key itself: a derived key, one use each.
    assert plan_mac(document, key) != plan_mac(document, key + b"x")
    result = ws.run("apply", "plan.json", "--auto-approve")
    assert result.code == 0, str(result)
    assert {t["TaskId"] for t in ws.emulator.tasks()} == {"task-a"}


def test_a_plan_for_another_state_is_stale_not_modified(ws: Workspace) -> None:
    ws.declare([session("a")])
    saved_plan(ws)
    other = {**ws.env(), "RECONCILER_STATE": str(ws.root / "other" / "state.db")}
    result = ws.run("apply", "plan.json", "--auto-approve", env=other)
    assert result.code == 1, str(result)
    assert "stale" in result.err and "another state" in result.err
    assert "modified" not in result.err
    assert total_calls(ws) == 0


def test_a_re_signed_old_plan_is_still_stale_by_age(ws: Workspace) -> None:
    """Whoever holds the state's key may write a plan; staleness checks still apply."""
    ws.declare([session("a")])
    document = saved_plan(ws)
    document["created_at"] = "2020-01-01T00:00:00Z"
    with SqliteStateStore(ws.state) as store:
        key = store.meta().fingerprint_key
    rewrite(ws, "plan.json", signed(document, key))
    result = ws.run("apply", "plan.json", "--auto-approve")
    assert result.code == 1 and "RECONCILER_PLAN_MAX_AGE" in result.err, str(result)
    assert total_calls(ws) == 0


def test_the_saved_plan_follows_the_plan_schema(ws: Workspace) -> None:
    from jsonschema import Draft7Validator

    from reconciler.schema_files import PLAN_SCHEMA, load_schema

    ws.declare([session("a")])
    document = saved_plan(ws)
    Draft7Validator(load_schema(PLAN_SCHEMA)).validate(document)


# -- item 3: a saved plan applies under any name ------------------------------------------


@pytest.mark.parametrize("name", ["p1.plan", "plan", "reviewed.txt"])
def test_a_saved_plan_applies_whatever_its_name(ws: Workspace, name: str) -> None:
    ws.declare([session("a")])
    saved_plan(ws, out=name)
    result = ws.run("apply", name, "--auto-approve")
    assert result.code == 0, str(result)
    assert "unsupported file type" not in result.err
    assert {t["TaskId"] for t in ws.emulator.tasks()} == {"task-a"}


def test_a_saved_plan_among_paths_is_a_usage_error(ws: Workspace) -> None:
    ws.declare([session("a")])
    saved_plan(ws, out="p1.plan")
    result = ws.run("apply", "p1.plan", "desired", "--auto-approve")
    assert result.code == 2, str(result)
    assert result.err == (
        "reconciler apply: error: p1.plan is a saved plan, which is applied alone: "
        "do not combine it with other paths (desired)\n"
    )
    assert total_calls(ws) == 0
    assert ws.records() == []


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            {"kind": "reconciler-plan", "actions": 3},
            "error: broken.plan: plan format version None is not 1: make the plan again with "
            "this reconciler\n",
        ),
        (
            {"kind": "reconciler-plan", "format_version": 1, "summary": {}, "lineage": 7},
            "error: broken.plan: not a usable saved plan: field 'lineage' is missing or not "
            "a string\n",
        ),
    ],
)
def test_a_plan_kind_document_that_is_unusable_is_one_clear_error(
    ws: Workspace, document: dict[str, Any], message: str
) -> None:
    (ws.root / "broken.plan").write_text(json.dumps(document))
    result = ws.run("apply", "broken.plan", "--auto-approve")
    assert result.code == 1, str(result)
    assert result.err == message
    assert total_calls(ws) == 0


def test_a_lone_json_manifest_is_still_a_manifest(ws: Workspace) -> None:
    """Content decides: a JSON manifest passed alone is loaded as a manifest."""
    manifest = ws.root / "desired" / "sessions.json"
    ws.declare([session("a")])
    result = ws.run("apply", str(manifest), "--auto-approve")
    assert result.code == 0, str(result)
    assert [r["name"] for r in ws.records()] == ["a"]
    assert APP in {t["AppId"] for t in ws.emulator.tasks()}


def test_the_mac_is_over_canonical_content_with_a_derived_key() -> None:
    import hashlib
    import hmac

    from reconciler.core.normalize import canonical_json

    key = b"s" * 32
    document = {"kind": "reconciler-plan", "serial": 3, "actions": [{"b": 1, "a": "é"}]}
    mac = plan_mac(document, key)
    # Key order and whitespace do not matter; the MAC field itself is left out.
    reordered = json.loads(
        json.dumps(
            {"actions": [{"a": "é", "b": 1}], "serial": 3, "kind": "reconciler-plan"}, indent=4
        )
    )
    assert plan_mac(reordered, key) == mac
    assert has_valid_mac(signed(reordered, key), key)
    # Any change of a value is a different document.
    assert not has_valid_mac({**signed(document, key), "serial": 4}, key)
    # Not keyed by the state key itself: the fingerprints and the plan MAC never share a key.
    content = canonical_json(document).encode()
    assert mac != "hmac-sha256:" + hmac.new(key, content, hashlib.sha256).hexdigest()
    derived = hmac.new(key, b"saved-plan", hashlib.sha256).digest()
    assert mac == "hmac-sha256:" + hmac.new(derived, content, hashlib.sha256).hexdigest()
