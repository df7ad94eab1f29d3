"""The daemon's pure parts: backoff, which callback ends heal, the watcher's filter, statuses."""

from __future__ import annotations

from pathlib import Path

import pytest
from watchfiles import Change

from reconciler.core.model import Liveness, Observation, SessionRecord
from reconciler.daemon.backoff import SessionBackoff
from reconciler.daemon.heal import ended_by_callback
from reconciler.daemon.status import session_statuses
from reconciler.daemon.triggers import Batch, Source, Trigger
from reconciler.daemon.watcher import ManifestFilter


def record(name: str, created: str = "2026-12-04T10:00:00Z", **kw: object) -> SessionRecord:
    return SessionRecord(
        name=name,
        provider="volcengine",
        identity=f"app/room-{name}/task-{name}",
        fingerprint="f",
        spec_json="{}",
        created_at=created,
        **kw,  # type: ignore[arg-type]
    )


# -- backoff ---------------------------------------------------------------------------------


def test_backoff_doubles_from_one_second_to_five_minutes_with_jitter() -> None:
    backoff = SessionBackoff(uniform=lambda low, high: high)  # the top of each range
    delays = [backoff.failed("s", 0.0, "boom").not_before for _ in range(12)]
    assert delays[:5] == [1, 2, 4, 8, 16]
    assert max(delays) == 300
    jittered = SessionBackoff(uniform=lambda low, high: low)
    assert jittered.failed("s", 10.0, "boom").not_before == 10.5  # at least half the delay


def test_backoff_waits_only_for_the_failing_session_and_forgets_on_success() -> None:
    backoff = SessionBackoff(uniform=lambda low, high: high)
    backoff.failed("bad", 100.0, "refused")
    assert backoff.waiting(100.5) == {"bad"}
    assert backoff.next_due(100.5) == pytest.approx(0.5)
    assert backoff.waiting(101.0) == frozenset()
    backoff.succeeded("bad")
    assert backoff.get("bad") is None and backoff.next_due(0) is None


# -- healing from callbacks ------------------------------------------------------------------


def test_a_stop_after_the_start_marks_the_record_ended() -> None:
    ends = {("volcengine", "app/room-a/task-a"): "2026-12-04T10:05:00Z"}
    (marked,) = ended_by_callback([record("a"), record("b")], ends, [], "2026-12-04T10:05:01Z")
    assert marked.name == "a"
    assert marked.observation is not None and marked.observation.liveness is Liveness.ENDED
    assert marked.observation.ended_at == "2026-12-04T10:05:00Z"


@pytest.mark.parametrize(
    ("at", "pending"),
    [
        ("2026-12-04T09:59:59Z", []),  # an earlier task's stop, delivered late
        ("2026-12-04T10:00:00Z", []),  # within the very second of the Start: not taken
        (None, []),  # the event says not when
        ("2026-12-04T10:05:00Z", ["a"]),  # our own call for it is in flight
    ],
)
def test_a_stop_that_may_not_be_this_tasks_end_changes_nothing(
    at: str | None, pending: list[str]
) -> None:
    ends = {("volcengine", "app/room-a/task-a"): at}
    assert ended_by_callback([record("a")], ends, pending, "2026-12-04T10:06:00Z") == []


def test_the_latest_stop_time_of_repeated_callbacks_counts() -> None:
    key = ("volcengine", "app/room-a/task-a")
    early = Trigger(Source.CALLBACK, None, *key, "2026-12-04T10:00:00Z")
    late = Trigger(Source.CALLBACK, None, *key, "2026-12-04T10:09:00Z")
    assert Batch({early: 1, late: 2}).task_ends == {key: "2026-12-04T10:09:00Z"}


# -- the watcher's filter --------------------------------------------------------------------


def test_the_filter_lets_through_manifests_and_the_ignore_file_only(tmp_path: Path) -> None:
    (tmp_path / "ci").mkdir()
    (tmp_path / ".reconcilerignore").write_text("ci/\n*.draft.json\n", encoding="utf-8")
    matters = ManifestFilter([str(tmp_path)])
    assert matters(Change.modified, str(tmp_path / "a.json"))
    assert matters(Change.added, str(tmp_path / "sub" / "b.yaml"))
    assert not matters(Change.modified, str(tmp_path / "ci" / "a.json"))
    assert not matters(Change.modified, str(tmp_path / "x.draft.json"))
    assert not matters(Change.modified, str(tmp_path / ".a.json.swp"))
    assert not matters(Change.modified, str(tmp_path / "a.json.tmp"))
    assert not matters(Change.modified, str(tmp_path / "reconciler.toml"))
    assert matters(Change.added, str(tmp_path / "..data"))  # a ConfigMap update
    assert matters(Change.deleted, str(tmp_path / "gone"))  # a directory, perhaps
    (tmp_path / ".reconcilerignore").write_text("", encoding="utf-8")
    assert matters(Change.modified, str(tmp_path / ".reconcilerignore"))
    assert matters(Change.modified, str(tmp_path / "ci" / "a.json")), "rules re-read"


def test_a_file_named_explicitly_is_watched_through_its_directory(tmp_path: Path) -> None:
    manifest = tmp_path / "one.json"
    manifest.write_text("{}", encoding="utf-8")
    matters = ManifestFilter([str(manifest)])
    assert matters.watched() == [str(tmp_path)]
    assert matters(Change.added, str(manifest))
    assert not matters(Change.added, str(tmp_path / "other.json"))


# -- statuses --------------------------------------------------------------------------------


def test_statuses_cover_recorded_declared_and_observed_sessions() -> None:
    from reconciler.core.model import DesiredSession

    def desired(name: str) -> DesiredSession:
        return DesiredSession(name, "volcengine", f"app/room-{name}/task-{name}", {})

    ended = Observation(Liveness.ENDED, "Finished", "2026-12-04T10:01:00Z")
    records = [
        record("up"),
        record("gone"),
        record("done", observation=ended),
        record("err", last_error="stop failed"),
    ]
    statuses = {
        s.name: s.status
        for s in session_statuses(
            [desired(n) for n in ("up", "new", "done", "err")], records, retries={}
        )
    }
    assert statuses == {
        "up": "running",
        "new": "pending",
        "done": "ended",
        "err": "error",
        "gone": "orphaned",
    }
