"""Incremental re-reads of the desired set, on real directories: the same answer as a full
read, unchanged files not parsed again, and the last good snapshot kept through bad edits."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core.render import PLAN_KIND
from reconciler.daemon.snapshot import DesiredReader, ReadResult
from reconciler.errors import ValidationFailed
from reconciler.workspace import load_desired
from tests.apply_helpers import session


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _manifest(*entries: dict[str, Any]) -> str:
    return json.dumps({"sessions": list(entries)}, indent=1)


def _names(result: ReadResult) -> list[str]:
    assert result.snapshot is not None
    return [s.name for s in result.snapshot.sessions]


def test_only_changed_files_are_parsed_again(tmp_path: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "team" / "b.yaml"
    _write(a, _manifest(session("one")))
    _write(b, _manifest(session("two")))
    reader = DesiredReader([str(tmp_path)])
    first = reader.read()
    assert first.valid and first.changed and _names(first) == ["one", "two"]
    assert sorted(first.parsed) == sorted([str(a), str(b)])

    again = reader.read()
    assert again.valid and not again.changed and again.parsed == ()
    assert again.snapshot == first.snapshot

    _write(b, _manifest(session("two"), session("three")))
    edited = reader.read()
    assert edited.parsed == (str(b),) and edited.changed
    assert _names(edited) == ["one", "three", "two"]
    assert edited.snapshot is not None and edited.snapshot.generation == 2


def test_a_touch_is_not_a_change_but_new_bytes_with_the_old_size_and_mtime_are(
    tmp_path: Path,
) -> None:
    path = tmp_path / "a.json"
    _write(path, _manifest(session("aaaa")))
    reader = DesiredReader([str(tmp_path)])
    reader.read()
    os.utime(path, ns=(1_000_000_000, 2_000_000_000))
    touched = reader.read()
    assert touched.parsed == () and not touched.changed
    # Same length, same mtime, other bytes: only the content hash can tell.
    before = path.stat()
    _write(path, _manifest(session("bbbb")))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size
    rewritten = reader.read()
    assert rewritten.parsed == (str(path),) and _names(rewritten) == ["bbbb"]


def test_a_bad_edit_keeps_the_last_good_snapshot_until_it_is_fixed(tmp_path: Path) -> None:
    good, other = tmp_path / "good.json", tmp_path / "other.json"
    _write(good, _manifest(session("keep")))
    _write(other, _manifest(session("gone-later")))
    reader = DesiredReader([str(tmp_path)])
    baseline = reader.read()
    _write(good, '{"sessions": [')
    other.unlink()  # removed while another file is broken: must not count yet
    broken = reader.read()
    assert not broken.valid and not broken.changed
    assert broken.snapshot == baseline.snapshot  # the last good set, whole
    assert [p.file for p in broken.problems] == [str(good)]
    assert "invalid JSON" in broken.problems[0].message
    _write(good, _manifest(session("keep")))
    fixed = reader.read()
    assert fixed.valid and fixed.changed and _names(fixed) == ["keep"]


def test_a_name_declared_in_two_files_is_reported_as_the_full_read_reports_it(
    tmp_path: Path,
) -> None:
    _write(tmp_path / "a.json", _manifest(session("twin")))
    _write(tmp_path / "b.json", _manifest(session("twin", room="elsewhere")))
    result = DesiredReader([str(tmp_path)]).read()
    try:
        load_desired([str(tmp_path)])
    except ValidationFailed as failed:
        assert result.problems == tuple(failed.problems)
        assert any("duplicate session name" in p.message for p in result.problems)
    else:
        raise AssertionError("the full read accepted a duplicate name")
    assert result.snapshot is None  # there never was a good one


# -- the property: after any sequence of edits, exactly what a full read says ---------------

_FILES = ["a.json", "b.yaml", "c.json", "sub/d.json", "sub/deep/e.yml"]
_CONTENTS = [
    _manifest(session("alpha")),
    _manifest(session("alpha"), session("beta")),
    _manifest(session("beta", temperature=0.9)),
    _manifest(session("gamma", room="shared", task="shared")),
    _manifest(session("delta", room="shared", task="shared")),  # the same task as gamma
    _manifest(session("alpha", prompt="other")),
    json.dumps({"defaults": {"labels": {"team": "x"}}, "sessions": [session("epsilon")]}),
    '{"sessions": [',  # does not parse
    _manifest({"name": "broken", "provider": "volcengine", "spec": {"AppId": 1}}),
    json.dumps({"kind": PLAN_KIND, "actions": []}),  # a saved plan: skipped in a walk
    "",
    _manifest(),
]
_IGNORES = ["", "c.json\n", "sub/\n", "sub/**\n!sub/d.json\n"]

_edit = st.one_of(
    st.tuples(st.just("write"), st.sampled_from(_FILES), st.sampled_from(_CONTENTS)),
    st.tuples(st.just("keep-mtime"), st.sampled_from(_FILES), st.sampled_from(_CONTENTS)),
    st.tuples(st.just("delete"), st.sampled_from(_FILES), st.just("")),
    st.tuples(st.just("touch"), st.sampled_from(_FILES), st.just("")),
    st.tuples(st.just("ignore"), st.just(""), st.sampled_from(_IGNORES)),
)


def _apply(root: Path, action: str, name: str, text: str) -> None:
    path = root / name
    if action == "write":
        _write(path, text)
    elif action == "keep-mtime" and path.exists():
        before = path.stat()
        _write(path, text)
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    elif action == "delete":
        path.unlink(missing_ok=True)
    elif action == "touch" and path.exists():
        os.utime(path)
    elif action == "ignore":
        _write(root / ".reconcilerignore", text)


@settings(max_examples=120, deadline=None)
@given(edits=st.lists(_edit, min_size=1, max_size=12))
def test_incremental_reads_equal_full_reads(edits: list[tuple[str, str, str]]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        reader = DesiredReader([str(root)])
        last_good = None
        for action, name, text in edits:
            _apply(root, action, name, text)
            result = reader.read()
            try:
                full = load_desired([str(root)])
            except ValidationFailed as failed:
                assert result.problems == tuple(failed.problems)
                assert (result.snapshot and result.snapshot.sessions) == last_good
            else:
                assert result.valid
                assert result.snapshot is not None and result.snapshot.sessions == full
                assert result.changed == (full != last_good)
                last_good = full
