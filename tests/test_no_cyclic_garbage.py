"""What runs while the cyclic collector is paused makes no reference cycles (collector.py).

Reading, validating, planning and rendering run with the collector off, and what they built is
frozen when the pause ends: a reference cycle made in there (a closure that calls itself is
one) is garbage nothing frees until the command ends, or never, in a daemon. A text plan of
10,000 creates kept every create's lines alive that way (~25 MB). With the collector off, a
collection after these stages must find nothing to free.
"""

from __future__ import annotations

import gc
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from reconciler.commands import _plan_from_files
from reconciler.core.plan import Guards, Plan
from reconciler.core.render import plan_document, text_chunks
from reconciler.core.render_markdown import render_markdown
from reconciler.core.saved import literal_secrets
from reconciler.core.selection import EVERY_SESSION
from reconciler.state.empty import EmptyState
from reconciler.workspace import load_manifests, schema_set

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture
def desired(tmp_path: Path) -> Path:
    """The examples (JSON, TOML, YAML, both providers) and sessions with a literal secret."""
    folder = tmp_path / "desired"
    shutil.copytree(EXAMPLES, folder, ignore=shutil.ignore_patterns("*.md"))
    manifest = json.loads((EXAMPLES / "support.json").read_text("utf-8"))
    base = manifest["sessions"][0]
    manifest["sessions"] = []
    for index in range(5):
        session = json.loads(json.dumps(base))
        session["name"] = f"literal-{index}"
        session["spec"]["RoomId"] = f"literal-room-{index}"
        session["spec"]["TaskId"] = f"literal-task-{index}"
        session["spec"].setdefault("Config", {}).setdefault("LLMConfig", {})["APIKey"] = "sk-1"
        manifest["sessions"].append(session)
    (folder / "literal.json").write_text(json.dumps(manifest), encoding="utf-8")
    return folder


@pytest.fixture
def collector_off() -> Iterator[Callable[[], int]]:
    """The collector off, as inside a pause; yields a function that collects and counts."""
    gc.collect()
    gc.disable()
    try:
        yield gc.collect
    finally:
        gc.enable()


def _plan(folder: Path) -> Plan:
    return _plan_from_files(
        [str(folder)], EmptyState(str(folder / "s.db")), Guards(), EVERY_SESSION
    )


def test_reading_planning_and_rendering_make_no_cycles(
    desired: Path, collector_off: Callable[[], int]
) -> None:
    sensitive = schema_set().sensitive
    warm = _plan(desired)  # first uses compile schemas and import modules: not garbage
    "".join(text_chunks(warm, sensitive))
    collector_off()

    assert load_manifests([str(desired)], {}).sessions
    assert collector_off() == 0
    plan = _plan(desired)
    assert len(plan.changes) > 5
    assert collector_off() == 0
    text = "".join(text_chunks(plan, sensitive))
    assert "+ /Config/LLMConfig/APIKey: (sensitive)" in text
    assert collector_off() == 0
    assert len(plan_document(plan, sensitive)["actions"]) == len(plan.actions)
    assert collector_off() == 0
    assert "literal-0" in render_markdown(plan, sensitive, artifact=None)
    assert collector_off() == 0
    assert len(literal_secrets(plan, sensitive)) == 5
    assert collector_off() == 0
