"""Rendering a create's spec once per shared subtree (issue #9) changes nothing in the output.

Sessions of a file share the objects their `defaults` leave untouched, so `render_text` makes the
lines of such a subtree once and reuses them; each leaf's JSON text is made once per distinct
value. The rendered plan must equal the one made action by action without any memo.
"""

from __future__ import annotations

import json
from pathlib import Path

from reconciler.commands import _plan_from_files
from reconciler.core.plan import Guards
from reconciler.core.render import _compact, render_text, spec_lines
from reconciler.core.selection import EVERY_SESSION
from reconciler.state.empty import EmptyState
from reconciler.workspace import schema_set

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "support.json"


def test_memoised_rendering_equals_rendering_each_action_alone(tmp_path: Path) -> None:
    manifest = json.loads(EXAMPLE.read_text("utf-8"))
    base = manifest["sessions"][0]
    # Many sessions over the same defaults, some overriding inside a shared subtree.
    for index in range(12):
        session = json.loads(json.dumps(base))
        session["name"] = f"copy-{index}"
        session["spec"]["RoomId"] = f"copy-room-{index}"
        session["spec"]["TaskId"] = f"copy-task-{index}"
        if index % 3 == 0:
            session["spec"].setdefault("Config", {})["LLMConfig"] = {"Temperature": -0.0}
        manifest["sessions"].append(session)
    (tmp_path / "many.json").write_text(json.dumps(manifest), encoding="utf-8")
    plan = _plan_from_files(
        [str(tmp_path)], EmptyState(str(tmp_path / "s.db")), Guards(), EVERY_SESSION
    )
    sensitive = schema_set().sensitive
    rendered = render_text(plan, sensitive)
    for action in plan.changes:
        alone = "\n".join(f"      {line}" for line in spec_lines(action, sensitive))
        assert alone in rendered
    assert rendered.count("+ /Config/ASRConfig/Provider:") == len(plan.changes) == 15
    assert rendered.count("+ /Config/LLMConfig/Temperature: -0.0") == 4


def test_a_leaf_renders_by_type_and_value() -> None:
    assert [_compact(v) for v in (1, True, 1.0, "1", -0.0, 0.0, 0, False)] == [
        "1",
        "true",
        "1.0",
        '"1"',
        "-0.0",
        "0.0",
        "0",
        "false",
    ]
