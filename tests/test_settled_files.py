"""A plan does not read the files the last apply left settled, and says exactly what reading
them would have said (core/settled.py).

Everything is real: manifests on disk, the emulator on 127.0.0.1, the CLI in this process,
the state a SQLite file (its PostgreSQL twin is held to the same store contract). Each case
compares the plan made with the settled files against the plan of a copy of the state that
has forgotten them (so every file is read): the same output, the same exit code. And it
checks which files the plan would skip, through the same functions the plan calls.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from apply_helpers import (
    SECRET_ENV,
    Result,
    Workspace,
    aliyun_session,
    session,
)

from reconciler import commands
from reconciler.commands import reusable_settled
from reconciler.core.model import DesiredSession, Location, RecordHead
from reconciler.core.settled import (
    ManifestFile,
    SettledFile,
    SettledSession,
    collides,
    context_digest,
    records_agree,
    settled_files,
    usable,
)
from reconciler.emulator.volcengine import Faults
from reconciler.state.sqlite import SqliteStateStore
from reconciler.workspace import code_digest, load_manifests


def declare_three(ws: Workspace) -> None:
    """Three files: two sessions, one session, none (an empty list settles too)."""
    ws.declare([session("a1"), session("a2", temperature=0.7)], "a.json")
    ws.declare([session("b1", prompt="Be brief.")], "b.json")
    ws.declare([], "empty.json")


def applied(ws: Workspace, *extra: str) -> None:
    result = ws.apply(*extra)
    assert result.code == 0, str(result)


@contextmanager
def environment(ws: Workspace, env: Mapping[str, str] | None = None) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        for key in list(os.environ):
            if key.startswith("RECONCILER_") or key in SECRET_ENV:
                patch.delenv(key)
        for key, value in (env if env is not None else ws.env()).items():
            patch.setenv(key, value)
        patch.chdir(ws.root)
        yield


def skipped(
    ws: Workspace,
    env: Mapping[str, str] | None = None,
    refreshing: bool = True,
    path: str | None = None,
) -> set[str]:
    """The files a plan in `env` would not read: the names of those load_manifests reuses."""
    with environment(ws, env), SqliteStateStore(ws.state, create=False) as store:
        reusable = reusable_settled(store, store.meta(), refreshing)
        read = load_manifests([path or str(ws.manifests)], reusable)
    return {Path(file.source).name for file in read.reused}


def forgotten_copy(ws: Workspace) -> Path:
    """A copy of the state (the SQLite backup API, so the WAL is in it) without its settled
    files: a plan against it reads every file."""
    copy = ws.root / "forgotten.db"
    copy.unlink(missing_ok=True)
    with sqlite3.connect(ws.state) as source, sqlite3.connect(copy) as target:
        source.backup(target)
        target.execute("DELETE FROM settled_files")
    return copy


def without_time(result: Result) -> Any:
    if not result.out.startswith("{"):
        return result.out
    document = json.loads(result.out)
    document.pop("created_at")
    return document


def same_plan(ws: Workspace, *args: str, env: Mapping[str, str] | None = None) -> Result:
    """The JSON plan with the settled files, held to the plan of the forgotten copy."""
    environ = dict(env if env is not None else ws.env())
    argv = ("plan", str(ws.manifests), "--format", "json", "--detailed-exitcode", *args)
    reusing = ws.run_here(*argv, env=environ)
    reading = ws.run_here(*argv, env={**environ, "RECONCILER_STATE": str(forgotten_copy(ws))})
    assert (reusing.code, reusing.err) == (reading.code, reading.err), f"{reusing}\n{reading}"
    assert without_time(reusing) == without_time(reading)
    return reusing


def actions(result: Result) -> dict[str, str]:
    return {action["name"]: action["kind"] for action in json.loads(result.out)["actions"]}


def test_after_an_apply_no_file_is_read_and_the_plan_is_the_same(ws: Workspace) -> None:
    declare_three(ws)
    applied(ws)
    assert skipped(ws) == {"a.json", "b.json", "empty.json"}
    result = same_plan(ws)
    assert result.code == 0
    assert actions(result) == {"a1": "noop", "a2": "noop", "b1": "noop"}
    text = ws.run_here("plan", str(ws.manifests))
    assert text.code == 0 and "No changes. 3 running session(s)" in text.out, str(text)
    # Applied from the absolute path; planned from the repository's root, as a pipeline does.
    for form in ("desired", "./desired", "desired/"):
        assert skipped(ws, path=form) == {"a.json", "b.json", "empty.json"}, form


def test_an_edited_file_is_read_and_the_others_are_not(ws: Workspace) -> None:
    declare_three(ws)
    applied(ws)
    ws.declare([session("a1"), session("a2", temperature=0.9)], "a.json")
    assert skipped(ws) == {"b.json", "empty.json"}
    result = same_plan(ws)
    assert result.code == 2 and actions(result)["a2"] == "replace"
    # Bytes that change nothing: the file is read again, and its sessions are noops.
    applied(ws)
    path = ws.manifests / "b.json"
    path.write_text(path.read_text() + "\n\n")
    assert skipped(ws) == {"a.json", "empty.json"}
    assert same_plan(ws).code == 0


def test_a_rotated_or_missing_secret_reads_the_files_that_use_it(ws: Workspace) -> None:
    ws.declare([session("a1")], "a.json")
    ws.declare([session("b1", llm_key="${env:OTHER_LLM_KEY}")], "b.json")
    env = {**ws.env(), "OTHER_LLM_KEY": "sk-other-0123456789"}
    result = ws.apply(env=env)
    assert result.code == 0, str(result)
    assert skipped(ws, env) == {"a.json", "b.json"}
    rotated = {**env, "OTHER_LLM_KEY": "sk-rotated-9876543210"}
    assert skipped(ws, rotated) == {"a.json"}
    result = same_plan(ws, env=rotated)
    assert result.code == 2 and actions(result)["a1"] == "noop" != actions(result)["b1"]
    # Not set where the plan runs (a pull-request job): compared by name, with the note.
    unset = {k: v for k, v in env.items() if k != "OTHER_LLM_KEY"}
    assert skipped(ws, unset) == {"a.json"}
    result = same_plan(ws, env=unset)
    assert any("could not be resolved here" in note for note in json.loads(result.out)["notes"])
    # The TTS token every file uses: nothing is skipped.
    assert skipped(ws, {**env, "TEST_TTS_TOKEN": "tts-rotated"}) == set()


def test_any_record_written_since_reads_every_file(ws: Workspace) -> None:
    declare_three(ws)
    applied(ws)
    result = ws.run_here("state", "rm", "b1")
    assert result.code == 0, str(result)
    assert skipped(ws) == set()
    result = same_plan(ws)
    assert result.code == 2 and actions(result)["b1"] == "create"
    # The next apply settles the files again, at the new serial (b1's task still runs: it
    # was only forgotten, so the apply takes it over).
    applied(ws, "--adopt-running")
    assert skipped(ws) == {"a.json", "b.json", "empty.json"}


@pytest.mark.parametrize("one_by_one", [True, False], ids=["records-one-by-one", "one-listing"])
def test_a_removed_file_stops_its_sessions_and_the_others_stay_unread(
    ws: Workspace, one_by_one: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The records outside the settled files are read one by one, or (past a threshold) in
    # one listing: the same plan either way.
    monkeypatch.setattr(commands, "_RECORDS_READ_ONE_BY_ONE", 1_000 if one_by_one else 0)
    declare_three(ws)
    applied(ws)
    (ws.manifests / "a.json").unlink()
    assert skipped(ws) == {"b.json", "empty.json"}
    result = same_plan(ws, "--max-stops", "5")
    assert result.code == 2
    assert actions(result) == {"a1": "delete", "a2": "delete", "b1": "noop"}
    # One more file that changed beside them: its records are read too.
    ws.declare([session("b1", prompt="Be curt.")], "b.json")
    assert skipped(ws) == {"empty.json"}
    result = same_plan(ws, "--max-stops", "5")
    assert actions(result) == {"a1": "delete", "a2": "delete", "b1": "replace"}


def test_a_duplicate_of_an_unread_session_is_reported_as_ever(ws: Workspace) -> None:
    declare_three(ws)
    applied(ws)
    ws.declare([session("b1", room="room-elsewhere", task="task-elsewhere")], "c.json")
    result = same_plan(ws)
    assert result.code == 1
    assert 'duplicate session name "b1"' in result.err, str(result)
    # The same task (provider and identity) under another name, likewise.
    ws.declare([session("c1", room="room-b1", task="task-b1")], "c.json")
    result = same_plan(ws)
    assert result.code == 1 and "already declares it" in result.err, str(result)


def test_a_selection_reads_every_file(ws: Workspace) -> None:
    ws.declare([session("a1", labels={"team": "x"}), session("a2")], "a.json")
    applied(ws)
    result = same_plan(ws, "-l", "team=x")
    assert result.code == 0 and actions(result) == {"a1": "noop"}
    assert json.loads(result.out)["summary"]["outside_selection"] == 1
    # And an apply under a selection settles nothing (its plan does not cover every file).
    ws.declare([session("a1", labels={"team": "x"}), session("a2", temperature=0.8)], "a.json")
    applied(ws, "-l", "team=x")
    assert skipped(ws) == set()


def test_a_refreshed_provider_is_read_and_an_unrefreshed_one_is_not(ws: Workspace) -> None:
    ws.declare([session("v1")], "volcengine.json")
    ws.declare([aliyun_session("y1")], "aliyun.json")
    applied(ws)
    # Alibaba Cloud's records are asked about when the plan refreshes: its file is read.
    assert skipped(ws, refreshing=True) == {"volcengine.json"}
    assert skipped(ws, refreshing=False) == {"volcengine.json", "aliyun.json"}
    result = same_plan(ws)
    assert result.code == 0
    assert same_plan(ws, "--refresh=false").code == 0


def test_a_failed_apply_settles_nothing(ws: Workspace) -> None:
    declare_three(ws)
    applied(ws)
    ws.declare([session("b1", prompt="Be brief.", llm_key="${env:NOT_SET_ANYWHERE}")], "b.json")
    result = ws.apply()
    assert result.code == 1 and "NOT_SET_ANYWHERE" in result.err, str(result)
    assert skipped(ws) == {"a.json", "empty.json"}  # still settled: nothing was written
    ws.declare([session("b1", prompt="Be briefer.")], "b.json")
    ws.emulator.set_faults(Faults(error_500_rate=1.0))  # every call fails
    result = ws.apply("--max-stops", "5", env=ws.env(max_attempts="1"))
    ws.emulator.set_faults(Faults())
    assert result.code == 1, str(result)
    # The failure is kept in b1's record (its last error), so the serial moved: the verdicts
    # of the earlier apply no longer stand, and this one settled nothing.
    assert skipped(ws) == set()
    result = same_plan(ws, "--max-stops", "5")
    assert result.code == 2 and actions(result)["b1"] == "replace"
    applied(ws, "--max-stops", "5")
    assert skipped(ws) == {"a.json", "b.json", "empty.json"}


def test_the_state_holds_no_secret_value(ws: Workspace) -> None:
    declare_three(ws)
    applied(ws)
    raw = ws.state_bytes()
    assert raw
    for value in SECRET_ENV.values():
        assert value.encode() not in raw


# -- the core, alone ------------------------------------------------------------------------


def _desired(name: str, file: str, refs: frozenset[str] = frozenset()) -> DesiredSession:
    return DesiredSession(
        name, "volcengine", f"app/{name}", {}, source=Location(file, "/sessions/0"), references=refs
    )


def test_the_context_moves_with_the_build_each_secret_value_and_the_key() -> None:
    refs = ["${env:A}", "${env:B}"]
    base = context_digest("build-1", refs, {"${env:A}": "1", "${env:B}": "2"}, b"k")
    assert base == context_digest(
        "build-1", reversed(refs), {"${env:B}": "2", "${env:A}": "1"}, b"k"
    )
    others = [
        context_digest("build-2", refs, {"${env:A}": "1", "${env:B}": "2"}, b"k"),
        context_digest("build-1", refs, {"${env:A}": "1", "${env:B}": "3"}, b"k"),
        context_digest("build-1", refs, {"${env:A}": "1"}, b"k"),
        context_digest("build-1", refs, {"${env:A}": "1", "${env:B}": "2"}, b"other key"),
        context_digest("build-1", refs[:1], {"${env:A}": "1", "${env:B}": "2"}, b"k"),
    ]
    assert len({base, *others}) == 6


def test_only_files_whose_every_session_is_a_noop_settle() -> None:
    sessions = [_desired("a", "f1"), _desired("b", "f1"), _desired("c", "f2")]
    files = [ManifestFile(f"f{n}", f"d{n}", f"k{n}") for n in (1, 2, 3)]
    found = settled_files(["a", "c"], files, sessions, serial=7, code="x", secrets={}, key=b"k")
    assert [(f.source, f.serial, f.digest) for f in found] == [("k2", 7, "d2"), ("k3", 7, "d3")]
    assert found[0].sessions == (SettledSession("c", "volcengine", "app/c"),)
    assert found[1].sessions == ()


def test_usable_wants_the_serial_the_context_and_an_unrefreshed_provider() -> None:
    secrets = {"${env:A}": "1"}
    context = context_digest("x", ["${env:A}"], secrets, b"k")
    file = SettledFile(
        "f", "d", context, 3, (SettledSession("a", "volcengine", "i"),), ("${env:A}",)
    )
    ok = {"volcengine": True}
    assert usable([file], serial=3, code="x", secrets=secrets, key=b"k", reusable_provider=ok)
    for changed in (
        {"serial": 4},
        {"code": "y"},
        {"secrets": {"${env:A}": "2"}},
        {"secrets": {}},
        {"key": b"other"},
        {"reusable_provider": {"volcengine": False}},
        {"reusable_provider": {}},
    ):
        arguments: dict[str, Any] = {
            "serial": 3,
            "code": "x",
            "secrets": secrets,
            "key": b"k",
            "reusable_provider": ok,
            **changed,
        }
        assert usable([file], **arguments) == {}, changed


def test_collisions_and_records_are_checked_across_reused_files() -> None:
    one = SettledFile("f1", "d", "c", 1, (SettledSession("a", "volcengine", "i1"),), ())
    two = SettledFile("f2", "d", "c", 1, (SettledSession("a", "volcengine", "i2"),), ())
    assert collides([], [one, two])  # the same name in two reused files
    assert collides([_desired("b", "f3")], [one]) is False
    assert collides([_desired("a", "f3")], [one])
    twin = SettledFile("f2", "d", "c", 1, (SettledSession("z", "volcengine", "i1"),), ())
    assert collides([], [one, twin])  # the same task under two names
    assert records_agree([one], [RecordHead("a", "volcengine", "i1", ended=False)])
    assert not records_agree([one], [])
    assert not records_agree([one], [RecordHead("a", "volcengine", "i9", ended=False)])
    assert not records_agree([one], [RecordHead("a", "aliyun", "i1", ended=False)])
    assert not records_agree([one], [RecordHead("a", "volcengine", "i1", ended=True)])


def test_the_build_digest_is_stable_within_a_process() -> None:
    assert code_digest() == code_digest() and len(code_digest()) == 64
