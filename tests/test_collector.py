"""collector.collection_paused: no cyclic collection inside, the collector back on after."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import pytest

from reconciler.cli import main
from reconciler.collector import collection_paused

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "support.json"


def test_the_collector_is_off_inside_and_on_after() -> None:
    assert gc.isenabled()
    with collection_paused():
        assert not gc.isenabled()
        with collection_paused():  # nested: the outermost pause decides
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


def test_an_error_inside_still_enables_it_again() -> None:
    with pytest.raises(ValueError), collection_paused():
        raise ValueError("bad file")
    assert gc.isenabled()


def test_a_pause_leaves_a_disabled_collector_disabled() -> None:
    gc.disable()
    try:
        with collection_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


class _Node:
    def __init__(self, children: list[_Node]) -> None:
        self.children = children


def test_what_a_pause_built_is_still_freed_by_reference_counting() -> None:
    with collection_paused():
        built = _Node([_Node([]) for _ in range(1000)])
    # Frozen (out of the collector's generations), yet freed once unused: no cycle holds it.
    alive = weakref.ref(built.children[0])
    assert alive() is not None
    del built
    assert alive() is None


def test_plan_and_validate_leave_the_collector_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RECONCILER_STATE", str(tmp_path / "state.db"))
    assert main(["validate", str(EXAMPLE)]) == 0
    assert gc.isenabled()
    assert main(["plan", "--detailed-exitcode", str(EXAMPLE)]) == 2
    assert gc.isenabled()
    assert "to start" in capsys.readouterr().out
