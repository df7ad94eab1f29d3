"""Issue #11 items 9 and 18 (state part).

9: read-only commands (`plan` without --out, `state list|show`, `validate`) create nothing: no
file, no folder, no PostgreSQL schema; on a missing state they read an empty one and say so.
`plan --out` creates the state its saved plan is bound to, and says so.
18: `state mv OLD NEW` renames a record without touching its task; `state list` and `state
show` include sessions whose call has an unknown outcome.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
import pytest
from apply_helpers import (
    SECRET_ENV,
    SECRET_VALUES,
    Workspace,
    run_cli,
    session,
    write_manifest,
)
from pg_helpers import postgres_url, state_url, throwaway_schema
from state_contract import full_record

from reconciler.core.model import JournalOp
from reconciler.emulator.volcengine import Faults
from reconciler.errors import StateError
from reconciler.state.base import StateStore
from reconciler.state.postgres import PostgresStateStore
from reconciler.state.sqlite import SqliteStateStore


def tree(root: Path) -> list[str]:
    """Every path under `root`, relative: what a command may have created."""
    return sorted(str(path.relative_to(root)) for path in root.rglob("*"))


def user_dir(tmp_path: Path) -> Path:
    """A working directory holding one manifest, as a new user has it."""
    write_manifest(tmp_path / "sessions" / "main.json", [session("a")])
    return tmp_path


def saveable(name: str) -> dict[str, Any]:
    """A session a saved plan may hold: every secret a reference, none given literally."""
    entry = session(name)
    del entry["spec"]["Config"]["SubtitleConfig"]
    return entry


# -- item 9: read-only commands create nothing ----------------------------------------------


@pytest.mark.parametrize("setting", [None, "stat/typo/state.db", "sqlite:///elsewhere/s.db"])
def test_plan_on_a_missing_state_creates_nothing(tmp_path: Path, setting: str | None) -> None:
    cwd = user_dir(tmp_path)
    env = dict(SECRET_ENV)
    if setting is not None:
        env["RECONCILER_STATE"] = setting
    where = {
        None: cwd / ".reconciler" / "state.db",
        "stat/typo/state.db": cwd / "stat" / "typo" / "state.db",
        "sqlite:///elsewhere/s.db": cwd / "elsewhere" / "s.db",
    }[setting]
    before = tree(cwd)

    done = run_cli(["plan", "sessions"], env, cwd)

    assert done.returncode == 0, done.stderr
    assert done.stderr == f"no state at {where} yet: everything is new\n"
    assert "Plan: 1 to start" in done.stdout
    assert tree(cwd) == before


@pytest.mark.parametrize(
    ("args", "code", "out", "err"),
    [
        (["list"], 0, "No sessions recorded.\n", "no state at {where} yet: nothing is recorded\n"),
        (["list", "--format", "json"], 0, "[]\n", "no state at {where} yet: nothing is recorded\n"),
        (
            ["show", "a"],
            1,
            "",
            'error: no session named "a" is recorded (no state at {where} yet)\n',
        ),
        (["rm", "a"], 1, "", 'error: no session named "a" is recorded (no state at {where} yet)\n'),
        (
            ["mv", "a", "b"],
            1,
            "",
            'error: no session named "a" is recorded (no state at {where} yet)\n',
        ),
        (["unlock"], 0, "Nothing to unlock: no state at {where} yet.\n", ""),
    ],
)
def test_state_commands_on_a_missing_state_create_nothing(
    tmp_path: Path, args: list[str], code: int, out: str, err: str
) -> None:
    cwd = user_dir(tmp_path)
    where = cwd / "typo" / "state.db"
    before = tree(cwd)

    done = run_cli(["state", *args], {"RECONCILER_STATE": "typo/state.db"}, cwd)

    assert (done.returncode, done.stdout, done.stderr) == (
        code,
        out.format(where=where),
        err.format(where=where),
    )
    assert tree(cwd) == before


def test_validate_never_touches_the_state(tmp_path: Path) -> None:
    cwd = user_dir(tmp_path)
    before = tree(cwd)
    for setting in ("typo/state.db", "postgresql://nobody@127.0.0.1:1/nothing"):
        done = run_cli(["validate", "sessions"], {"RECONCILER_STATE": setting}, cwd)
        assert done.returncode == 0, done.stderr
        assert done.stdout == "Valid: 1 session(s) declared.\n"
        assert done.stderr == ""
    assert tree(cwd) == before


def test_plan_out_creates_the_state_it_binds_the_plan_to(ws: Workspace) -> None:
    ws.declare([saveable("a")])
    saved = ws.root / "plan.json"

    first = ws.run("plan", str(ws.manifests), "--out", str(saved))

    assert first.code == 0, str(first)
    assert first.err.startswith(
        f"created a new, empty state at {ws.state} to bind the saved plan to\n"
    )
    assert ws.state.exists()
    with SqliteStateStore(ws.state) as store:
        lineage = store.meta().lineage
    assert json.loads(saved.read_text())["lineage"] == lineage
    again = ws.run("plan", str(ws.manifests), "--out", str(saved))
    assert again.code == 0 and "created" not in again.err and "no state" not in again.err
    applied = ws.run("apply", str(saved), "--auto-approve")
    assert applied.code == 0, str(applied)


def test_plan_out_of_invalid_files_creates_nothing(tmp_path: Path) -> None:
    (tmp_path / "sessions").mkdir()
    (tmp_path / "sessions" / "bad.json").write_text('{"sessions": [{"name": "x"}]}')
    before = tree(tmp_path)
    done = run_cli(["plan", "sessions", "--out", "plan.json"], {}, tmp_path)
    assert done.returncode == 1
    assert "bad.json" in done.stderr and "Traceback" not in done.stderr
    assert tree(tmp_path) == before


def test_read_only_commands_create_no_postgres_schema(tmp_path: Path) -> None:
    server = postgres_url()
    cwd = user_dir(tmp_path)
    with throwaway_schema(server) as schema:
        url = state_url(server.replace("postgres@", "postgres:s3cret-pw@", 1), schema)
        env = {"RECONCILER_STATE": url, **SECRET_ENV}
        location = f"postgresql://postgres@127.0.0.1:5432/test (schema {schema})"

        plan = run_cli(["plan", "sessions"], env, cwd)
        listing = run_cli(["state", "list"], env, cwd)

        assert plan.returncode == 0, plan.stderr
        assert plan.stderr == f"no state at {location} yet: everything is new\n"
        assert listing.returncode == 0, listing.stderr
        assert listing.stderr == f"no state at {location} yet: nothing is recorded\n"
        assert "s3cret-pw" not in plan.stdout + plan.stderr + listing.stdout + listing.stderr
        with psycopg.connect(server) as conn:
            found = conn.execute(
                "SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)
            ).fetchone()
        assert found is None


# -- item 18: state mv ---------------------------------------------------------------------


def renamed(entry: dict[str, Any], name: str) -> dict[str, Any]:
    """The same declaration under another name: same spec, same task."""
    return {**entry, "name": name}


def record_of(ws: Workspace, name: str) -> dict[str, Any]:
    return next(record for record in ws.records() if record["name"] == name)


def test_state_mv_renames_without_touching_the_task(ws: Workspace) -> None:
    hello = {"id": "hello-1", "message": "Hello"}
    ws.declare([session("a")])
    assert ws.apply().code == 0
    ws.declare([session("a", announcements=[hello])])
    assert ws.apply().code == 0
    before = record_of(ws, "a")
    serial, calls = ws.serial(), ws.emulator.calls()["total"]

    moved = ws.run("state", "mv", "a", "b")

    assert moved.code == 0, str(moved)
    assert moved.out == (
        'Renamed "a" to "b" in the state; its task was not touched and keeps running. Rename '
        'it in the manifests too before the next apply: while they still declare "a", the '
        'plan stops "b" (cutting its call) and starts "a" afresh.\n'
    )
    assert [record["name"] for record in ws.records()] == ["b"]
    assert record_of(ws, "b") == {**before, "name": "b"}
    assert before["announcements_delivered"] == ["hello-1"]
    assert ws.serial() == serial + 1
    assert ws.emulator.calls()["total"] == calls

    ws.declare([renamed(session("a", announcements=[hello]), "b")])
    assert ws.plan_exit().code == 0  # nothing to do: the task is b's now
    ws.declare([session("a", announcements=[hello])])
    stale = ws.run("plan", str(ws.manifests))
    assert "Plan: 1 to start" in stale.out and "1 to stop" in stale.out  # what the note says


def test_state_mv_refusals_change_nothing(ws: Workspace) -> None:
    ws.declare([session("a"), session("c")])
    assert ws.apply().code == 0
    serial = ws.serial()
    with SqliteStateStore(ws.state) as store:
        # As a run killed during an announcement to "c" and a Start of "p" left them.
        store.begin_intent("c", JournalOp.UPDATE, "volcengine", "x/room-c/task-c", "{}")
        store.begin_intent("p", JournalOp.START, "volcengine", "x/room-p/task-p", "{}")

    refusals = {
        ("a", "c"): 'a session named "c" is already recorded: `state mv` never overwrites one',
        ("zz", "b"): 'no session named "zz" is recorded',
        ("c", "d"): '"c" has a call of unknown outcome pending: run `reconciler apply` on the '
        "manifests to finish it first",
        ("a", "p"): '"p" has a call of unknown outcome pending: run `reconciler apply` on the '
        "manifests to finish it first",
        ("a", "a"): '"a" already has that name',
    }
    for (old, new), message in refusals.items():
        refused = ws.run("state", "mv", old, new)
        assert (refused.code, refused.out, refused.err) == (1, "", f"error: {message}\n")
    assert ws.serial() == serial
    assert [record["name"] for record in ws.records()] == ["a", "c", "p"]  # p: pending only


def test_state_mv_needs_the_writer_lock(ws: Workspace) -> None:
    ws.declare([session("a")])
    assert ws.apply().code == 0
    with SqliteStateStore(ws.state) as store, store.lock("apply elsewhere"):
        refused = ws.run("state", "mv", "a", "b")
    assert refused.code == 1
    assert refused.err.startswith("error: the state is locked by pid ")
    assert "(apply elsewhere)" in refused.err
    assert [record["name"] for record in ws.records()] == ["a"]


def test_state_mv_makes_a_saved_plan_stale(ws: Workspace) -> None:
    ws.declare([saveable("a")])
    assert ws.apply().code == 0
    ws.declare([saveable("a"), saveable("n")])
    saved = ws.root / "plan.json"
    assert ws.run("plan", str(ws.manifests), "--out", str(saved)).code == 0
    assert ws.run("state", "mv", "a", "b").code == 0
    calls = ws.emulator.calls()["total"]
    refused = ws.run("apply", str(saved), "--auto-approve")
    assert refused.code == 1
    assert "stale" in refused.err
    assert ws.emulator.calls()["total"] == calls


# -- item 18: sessions with a pending call are listed ------------------------------------------


def test_state_list_and_show_include_a_start_of_unknown_outcome(ws: Workspace) -> None:
    ws.declare([session("a"), session("b")])
    assert ws.apply().code == 0
    ws.declare([session("a"), session("b"), session("z")])
    ws.emulator.set_faults(Faults(latency=1.0))
    unknown = ws.run(
        "apply",
        str(ws.manifests),
        "--auto-approve",
        env=ws.env(volcengine__timeout="0.2", max_attempts="1"),
    )
    assert unknown.code == 1, str(unknown)
    (entry,) = ws.pending()
    identity = "661e4b8f2f1d3c0123456789/room-z/task-z"
    expected_pending = {
        "journal_id": entry.id,
        "call": "start",
        "status": "pending start (unknown outcome)",
        "provider_ids": {
            "AppId": "661e4b8f2f1d3c0123456789",
            "RoomId": "room-z",
            "TaskId": "task-z",
        },
        "started_at": entry.started_at,
    }

    text = ws.run("state", "list")
    as_json = ws.run("state", "list", "--format", "json")
    shown = ws.run("state", "show", "z")
    shown_recorded = ws.run("state", "show", "a")

    assert text.code == as_json.code == shown.code == shown_recorded.code == 0
    assert text.out.splitlines()[-3:] == [
        "Calls of unknown outcome (the next `reconciler apply PATH...` finishes them):",
        "NAME  STATUS                           IDENTITY" + " " * (len(identity) - 8) + "  SINCE",
        f"z     pending start (unknown outcome)  {identity}  {entry.started_at}",
    ]
    assert text.out.splitlines()[1].startswith("a ")
    listing = json.loads(as_json.out)
    assert [item["name"] for item in listing] == ["a", "b", "z"]
    assert listing[0]["pending"] == [] and listing[0]["status"] == "running"
    assert listing[2] == {
        "name": "z",
        "provider": "volcengine",
        "identity": identity,
        "status": "pending start (unknown outcome)",
        "pending": [expected_pending],
    }
    assert json.loads(shown.out) == listing[2]
    assert json.loads(shown_recorded.out) == listing[0]
    for secret in SECRET_VALUES:
        assert secret not in text.out + as_json.out + shown.out


# -- the store contract for rename_record, on both stores ------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def open_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[[], StateStore]]:
    if request.param == "sqlite":
        yield lambda: SqliteStateStore(tmp_path / "state.db")
        return
    server = postgres_url()
    with throwaway_schema(server) as schema:
        yield lambda: PostgresStateStore(server, schema=schema)


def test_rename_record_keeps_every_field_and_bumps_the_serial(
    open_store: Callable[[], StateStore],
) -> None:
    with closing(open_store()) as store:
        store.put_record(full_record("old"))
        store.put_record(full_record("other"))
        serial = store.meta().serial
        store.rename_record("old", "new")
        assert store.get_record("old") is None
        assert store.get_record("new") == replace(full_record("old"), name="new")
        assert store.meta().serial == serial + 1
    with closing(open_store()) as reopened:
        assert [record.name for record in reopened.list_records()] == ["new", "other"]


def test_rename_record_refuses_and_changes_nothing(open_store: Callable[[], StateStore]) -> None:
    with closing(open_store()) as store:
        store.put_record(full_record("a"))
        store.put_record(full_record("b"))
        store.put_record(full_record("busy"))
        busy = store.get_record("busy")
        assert busy is not None
        # A pending intent on the task, even journaled under another name, blocks it.
        store.begin_intent("elsewhere", JournalOp.STOP, "volcengine", busy.identity, "{}")
        serial = store.meta().serial
        for old, new, message in [
            ("a", "b", 'a session named "b" is already recorded'),
            ("nope", "x", 'no session named "nope" is recorded'),
            ("busy", "x", '"elsewhere" has a call of unknown outcome pending'),
            ("a", "elsewhere", '"elsewhere" has a call of unknown outcome pending'),
        ]:
            with pytest.raises(StateError) as refused:
                store.rename_record(old, new)
            assert str(refused.value).startswith(message)
        assert store.meta().serial == serial
        assert [record.name for record in store.list_records()] == ["a", "b", "busy"]
