"""Issue #11 items 6 and 11: what a plan considers.

Item 6: a protected session whose declaration was removed is kept running (Argo CD's
Prune=false) and does not block the rest of the plan. Item 11: `-l` / `--target` limit a plan to
some sessions, and a plan says when the paths given hold only part of what the state tracks.

Everything is real: the CLI runs as a subprocess (`python -m reconciler`), the emulator is an
HTTP server on 127.0.0.1 and the state a SQLite file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from apply_helpers import Workspace
from apply_helpers import session as full_session


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


# -- item 11: selecting sessions, and a plan that says it sees only part of the state ------


def test_selector_grammar() -> None:
    from reconciler.core.selection import Operator, Requirement, Selection, parse_selector

    assert parse_selector("team=support, tier==1,env!=prod,canary,!legacy") == (
        Requirement("team", Operator.EQUALS, "support"),
        Requirement("tier", Operator.EQUALS, "1"),
        Requirement("env", Operator.NOT_EQUALS, "prod"),
        Requirement("canary", Operator.EXISTS),
        Requirement("legacy", Operator.NOT_EXISTS),
    )
    assert parse_selector("app.example.com/tier=") == (
        Requirement("app.example.com/tier", Operator.EQUALS, ""),
    )
    selection = Selection(parse_selector("team=support,env!=prod,!legacy"))
    assert selection.includes("a", {"team": "support"})
    assert selection.includes("a", {"team": "support", "env": "staging"})
    assert not selection.includes("a", {"team": "support", "env": "prod"})
    assert not selection.includes("a", {"team": "support", "legacy": "yes"})
    assert not selection.includes("a", {"team": "sales"})
    targeted = Selection(parse_selector("team"), frozenset({"a"}))
    assert targeted.includes("a", {"team": "x"})
    assert not targeted.includes("b", {"team": "x"})
    assert not targeted.includes("a", {})
    assert not Selection().limited and Selection().includes("anything", {})


@pytest.mark.parametrize(
    ("text", "fault"),
    [
        ("team=a=b", "'team=a=b' is not key=value"),
        ("team=a,,tier=1", "an empty requirement is not key=value"),
        ("", "an empty requirement"),
        ("-team=a", "'-team' is not a label key"),
        ("!team=a", "'!team=a' negates a comparison; write key!=value"),
    ],
)
def test_a_bad_selector_is_named(text: str, fault: str) -> None:
    from reconciler.core.selection import SelectorError, parse_selector

    with pytest.raises(SelectorError) as raised:
        parse_selector(text)
    assert str(raised.value).startswith(f"invalid selector {text!r}: ")
    assert fault in str(raised.value)


def labelled(name: str, team: str) -> dict[str, Any]:
    return session(name, labels={"team": team})


def test_a_selector_limits_the_plan_and_leaves_the_others_untouched(ws: Workspace) -> None:
    converge(
        ws,
        [labelled("s1", "support"), labelled("s2", "support"), labelled("x1", "sales")],
    )
    # Everything changes, but only the support sessions are in scope.
    ws.declare(
        [
            labelled("s1", "support") | {"spec": session("s1", temperature=0.9)["spec"]},
            labelled("s3", "support"),
            labelled("x2", "sales"),
        ]
    )
    before = calls_by_action(ws)
    plan = ws.run("plan", "desired", "-l", "team=support", "--detailed-exitcode")
    assert plan.code == 2, str(plan)
    assert "replace s1" in plan.out and "create s3" in plan.out and "delete s2" in plan.out
    assert "x1" not in plan.out and "x2" not in plan.out
    assert (
        "Plan: 1 to start, 1 to restart (cuts 1 live conversation), 1 to stop. "
        "2 session(s) outside the selection were not considered."
    ) in plan.out
    as_json = json.loads(ws.run("plan", "desired", "-l", "team=support", "--format", "json").out)
    assert sorted(a["name"] for a in as_json["actions"]) == ["s1", "s2", "s3"]
    assert as_json["summary"]["outside_selection"] == 2

    result = ws.apply("-l", "team=support", here=False)
    assert result.code == 0, str(result)
    assert task_ids(ws) == {"task-s1", "task-s3", "task-x1"}  # x1 kept, x2 not started
    after = calls_by_action(ws)
    assert after["StartVoiceChat"] - before.get("StartVoiceChat", 0) == 2
    assert after["StopVoiceChat"] - before.get("StopVoiceChat", 0) == 2


def test_targets_and_repeated_selectors(ws: Workspace) -> None:
    converge(ws, [labelled("a", "support"), labelled("b", "support"), labelled("c", "sales")])
    ws.declare([labelled("b", "support")])  # a and c are no longer declared
    before = calls_by_action(ws)
    # --target picks names; a repeated -l must hold too (AND): c is not support.
    plan = ws.run("plan", "desired", "--target", "a", "--target", "c", "-l", "team=support")
    assert plan.code == 0, str(plan)
    assert "delete a" in plan.out and "delete c" not in plan.out
    assert "2 session(s) outside the selection were not considered." in plan.out
    # Stopping a targeted session is meant: the empty-desired guard does not trip.
    result = ws.apply("--target", "a", here=False)
    assert result.code == 0, str(result)
    assert "Refused" not in result.out
    assert task_ids(ws) == {"task-b", "task-c"}
    assert calls_by_action(ws)["StopVoiceChat"] - before.get("StopVoiceChat", 0) == 1


def test_an_empty_selection_of_declared_sessions_still_guards(ws: Workspace) -> None:
    converge(ws, [labelled("a", "support"), labelled("c", "sales")])
    ws.declare([labelled("c", "sales")])
    before = calls_by_action(ws)
    refused = ws.apply("-l", "team=support", here=False)
    assert refused.code == 1, str(refused)
    assert "no session in the selection is declared but 1 session(s)" in refused.out
    assert calls_by_action(ws) == before


def test_a_target_naming_nothing_is_an_error(ws: Workspace) -> None:
    converge(ws, [session("a")])
    before = calls_by_action(ws)
    for command in (["plan", "desired"], ["apply", "desired", "--auto-approve"]):
        result = ws.run(*command, "--target", "a", "--target", "nope")
        assert result.code == 1, str(result)
        assert result.err == ('error: --target "nope": no such session is declared or recorded\n')
    assert calls_by_action(ws) == before


def test_a_bad_selector_is_a_usage_error(ws: Workspace) -> None:
    ws.declare([session("a")])
    result = ws.run("plan", "desired", "-l", "team=a=b")
    assert result.code == 2, str(result)
    assert (
        "reconciler plan: error: argument -l/--selector: invalid selector 'team=a=b': "
        "'team=a=b' is not key=value, key!=value, key or !key"
    ) in result.err
    assert "Traceback" not in result.err
    assert ws.emulator.calls()["total"] == 0


def test_a_saved_plan_made_with_a_selection_applies_exactly_its_actions(ws: Workspace) -> None:
    converge(ws, [labelled("s1", "support"), labelled("x1", "sales")])
    ws.declare([labelled("s2", "support"), labelled("x2", "sales")])
    made = ws.run("plan", "desired", "-l", "team=support", "--out", "plan.json")
    assert made.code == 0, str(made)
    result = ws.run("apply", "plan.json", "--auto-approve")
    assert result.code == 0, str(result)
    # The reviewed plan, shown again as it was made: x1 and x2 were outside its selection.
    assert "2 session(s) outside the selection were not considered." in result.out
    assert task_ids(ws) == {"task-s2", "task-x1"}
    # Selecting again at apply time is meaningless for a saved plan: a usage error.
    again = ws.run("apply", "plan.json", "--auto-approve", "-l", "team=sales")
    assert again.code == 2, str(again)
    assert "-l / --target do not apply to a saved plan" in again.err


def test_a_subdirectory_plan_says_it_stops_sessions_declared_elsewhere(ws: Workspace) -> None:
    us = [session(f"us{i}") for i in range(3)]
    ws.declare(us, name="us/a.json")
    ws.declare([session("eu0")], name="eu/b.json")
    assert ws.run("apply", "desired", "--auto-approve").code == 0
    records = {r["name"]: r["source"] for r in ws.records()}
    assert records == {
        "eu0": "desired/eu/b.json",
        "us0": "desired/us/a.json",
        "us1": "desired/us/a.json",
        "us2": "desired/us/a.json",
    }
    before = calls_by_action(ws)
    plan = ws.run("plan", "desired/eu")
    assert plan.code == 0, str(plan)
    assert (
        "Note: 3 session(s) to stop were declared in files outside the given paths "
        "(desired/us/a.json): pass the directory that holds every manifest, or limit the plan "
        "with -l / --target"
    ) in plan.out
    as_json = json.loads(ws.run("plan", "desired/eu", "--format", "json").out)
    assert any("outside the given paths" in note for note in as_json["notes"])
    markdown = ws.run("plan", "desired/eu", "--format", "markdown").out
    assert "> 3 session(s) to stop were declared in files outside the given paths" in markdown
    # The whole tree, or an absolute path to it, holds every source: no note.
    whole = ws.run("plan", str(ws.root / "desired"))
    assert whole.code == 0 and "outside the given paths" not in whole.out
    assert calls_by_action(ws) == before


def test_old_records_without_a_source_get_no_note(ws: Workspace) -> None:
    import sqlite3

    ws.declare([session("a"), session("b")])
    assert ws.apply(here=False).code == 0
    with sqlite3.connect(ws.state) as raw:
        raw.execute("UPDATE sessions SET source = NULL")
    ws.declare([session("b")], name="other/b.json")
    (ws.manifests / "sessions.json").unlink()
    plan = ws.run("plan", "desired/other")
    assert plan.code == 0 and "delete a" in plan.out, str(plan)
    assert "outside the given paths" not in plan.out


# -- the `source` column: migrating a state made before it --------------------------------

_V1_RECORD = (
    "a",
    "volcengine",
    "app/room/task",
    "fp",
    "{}",
    "running",
    '{"AppId": "app"}',
    "[]",
    0,
    '{"team": "x"}',
    "t0",
    "t0",
    None,
)


def test_a_version_1_sqlite_state_migrates_and_keeps_its_records(tmp_path: Path) -> None:
    import sqlite3

    from reconciler.core.model import SessionRecord
    from reconciler.state.sqlite import MIGRATIONS, SCHEMA_VERSION, SqliteStateStore

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as raw:
        for statement in MIGRATIONS[0]:
            raw.execute(statement)
        raw.execute("PRAGMA user_version = 1")
        raw.execute("INSERT INTO meta VALUES (1, 'lineage-old', 4, x'00', 't0')")
        raw.execute(f"INSERT INTO sessions VALUES ({', '.join('?' * 13)})", _V1_RECORD)
    with SqliteStateStore(path) as store:
        (record,) = store.list_records()
        assert (record.name, record.labels, record.source) == ("a", {"team": "x"}, None)
        assert store.meta().serial == 4 and store.meta().lineage == "lineage-old"
        store.put_record(SessionRecord("b", "volcengine", "i", "f", "{}", source="d/b.json"))
    with SqliteStateStore(path) as store:
        reread = store.get_record("b")
        assert reread is not None and reread.source == "d/b.json"
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4


def test_a_version_1_postgres_state_migrates_and_keeps_its_records() -> None:
    import psycopg
    from pg_helpers import postgres_url, throwaway_schema
    from psycopg import sql

    from reconciler.core.model import SessionRecord
    from reconciler.state.pg_schema import MIGRATIONS, SCHEMA_VERSION
    from reconciler.state.postgres import PostgresStateStore

    url = postgres_url()
    with throwaway_schema(url) as schema:
        names = {
            name: sql.Identifier(schema, name)
            for name in ("meta", "sessions", "journal", "lock_holder", "schema_version")
        }
        with psycopg.connect(url, autocommit=True) as raw:
            raw.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
            for statement in MIGRATIONS[0]:
                raw.execute(sql.SQL(statement).format(**names))
            raw.execute(
                sql.SQL("CREATE TABLE {} (id integer PRIMARY KEY, version integer)").format(
                    names["schema_version"]
                )
            )
            raw.execute(sql.SQL("INSERT INTO {} VALUES (1, 1)").format(names["schema_version"]))
            raw.execute(
                sql.SQL("INSERT INTO {} VALUES (1, 'lineage-old', 4, '\\x00', 't0')").format(
                    names["meta"]
                )
            )
            raw.execute(
                sql.SQL(f"INSERT INTO {{}} VALUES ({', '.join(['%s'] * 13)})").format(
                    names["sessions"]
                ),
                (*_V1_RECORD[:8], False, *_V1_RECORD[9:]),
            )
        store = PostgresStateStore(url, schema=schema)
        try:
            (record,) = store.list_records()
            assert (record.name, record.labels, record.source) == ("a", {"team": "x"}, None)
            assert store.meta().serial == 4
            store.put_record(SessionRecord("b", "volcengine", "i", "f", "{}", source="d/b.json"))
            assert store.get_record("b") == store.list_records()[1]
            assert store.list_records()[1].source == "d/b.json"
        finally:
            store.close()
        with psycopg.connect(url) as raw:
            version = raw.execute(
                sql.SQL("SELECT version FROM {}").format(names["schema_version"])
            ).fetchone()
        assert version == (SCHEMA_VERSION,) and SCHEMA_VERSION == 4


def test_many_kept_sessions_still_fit_the_comment_limit() -> None:
    from dataclasses import replace

    from reconciler.core.model import DesiredSession, StateMeta
    from reconciler.core.outcome import action_outcome
    from reconciler.core.plan import Guards, make_plan
    from reconciler.core.render_markdown import GITHUB_COMMENT_LIMIT, render_markdown
    from reconciler.providers.registry import provider_rules

    RULES = provider_rules()
    meta = StateMeta("lineage", 1, b"k" * 32)

    def declared(index: int) -> DesiredSession:
        spec = {"AppId": "app", "RoomId": f"room-{index}", "TaskId": f"task-{index}"}
        return DesiredSession(
            f"s-{index:05d}", "volcengine", f"app/room-{index}/task-{index}", spec
        )

    sessions = [declared(i) for i in range(3000)]
    started = make_plan(sessions, [], meta, {}, {}, Guards(max_stops=None), rules=RULES)
    records = [
        replace(record, protect=True)
        for action in started.actions
        if (record := action_outcome(action, b"k" * 32, {}, {}, "t", rules=RULES)) is not None
    ]
    plan = make_plan([declared(9999)], records, meta, {}, {}, rules=RULES)
    assert len(plan.kept) == 3000 and not plan.violations
    text = render_markdown(plan, {}, artifact="plan.json")
    assert len(text) <= GITHUB_COMMENT_LIMIT
    assert "| kept: protected (no longer declared) | 3000 |" in text
    assert "more kept sessions not shown" in text
    assert "**create** `s-09999`" in text  # the change is shown whatever the kept list
