"""A large text plan is rendered on two processors and reads the same (text_output.py).

The second run of the changes is rendered by a forked child into a temporary file; the text
must be the one-process text byte for byte, also when the child fails (it is then rendered
in the parent), and the child must never outlive a write that fails.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.commands import _plan_from_files
from reconciler.core.plan import Guards, Plan
from reconciler.core.render import render_text
from reconciler.core.selection import EVERY_SESSION
from reconciler.state.empty import EmptyState
from reconciler.text_output import write_text_plan
from reconciler.workspace import schema_set

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "support.json"

two_processors = pytest.mark.skipif(
    not sys.platform.startswith("linux") or len(os.sched_getaffinity(0)) < 2,
    reason="the plan is written in two processes only on Linux with two processors or more",
)


def _desired(folder: Path, count: int) -> Path:
    manifest = json.loads(EXAMPLE.read_text("utf-8"))
    base = manifest["sessions"][0]
    manifest["sessions"] = []
    for index in range(count):
        session = json.loads(json.dumps(base))
        session["name"] = f"line-{index:03d}"
        session["spec"]["RoomId"] = f"room-{index}"
        session["spec"]["TaskId"] = f"task-{index}"
        session["spec"]["AgentConfig"]["WelcomeMessage"] = f"Hello from line {index} \u00e9"
        manifest["sessions"].append(session)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "lines.json").write_text(json.dumps(manifest), encoding="utf-8")
    return folder


def _plan(folder: Path) -> Plan:
    return _plan_from_files(
        [str(folder)], EmptyState(str(folder / "s.db")), Guards(), EVERY_SESSION
    )


@two_processors
def test_two_processes_write_the_one_process_text(tmp_path: Path) -> None:
    plan = _plan(_desired(tmp_path / "desired", 41))
    sensitive = schema_set().sensitive
    stream = io.StringIO()
    assert write_text_plan(plan, sensitive, stream, parallel_from=2) is True
    assert stream.getvalue() == render_text(plan, sensitive)
    assert stream.getvalue().count("  + create line-") == 41


def test_a_plan_under_the_threshold_is_written_here(tmp_path: Path) -> None:
    plan = _plan(_desired(tmp_path / "desired", 5))
    sensitive = schema_set().sensitive
    stream = io.StringIO()
    assert write_text_plan(plan, sensitive, stream, parallel_from=6) is False
    assert stream.getvalue() == render_text(plan, sensitive)


_SCRIPT = r"""
import io, os, resource, sys
from pathlib import Path
from reconciler.commands import _plan_from_files
from reconciler.core.plan import Guards
from reconciler.core.render import render_text
from reconciler.core.selection import EVERY_SESSION
from reconciler.state.empty import EmptyState
from reconciler.text_output import write_text_plan
from reconciler.workspace import schema_set

folder = Path(sys.argv[1])
plan = _plan_from_files([str(folder)], EmptyState(str(folder / "s.db")), Guards(), EVERY_SESSION)
sensitive = schema_set().sensitive
expected = render_text(plan, sensitive)
if sys.argv[2] == "child-killed":
    # No file may grow past 100 bytes: the child's first write to its temporary file gets
    # SIGXFSZ, which kills it (the parent writes only to memory).
    resource.setrlimit(resource.RLIMIT_FSIZE, (100, 100))
    stream = io.StringIO()
    used = write_text_plan(plan, sensitive, stream, parallel_from=2)
    print("child text used" if used else "rendered here", stream.getvalue() == expected)
else:
    class Closed(io.StringIO):
        def write(self, text):
            if self.tell() > 2000:
                raise BrokenPipeError("the reader went away")
            return super().write(text)
    try:
        write_text_plan(plan, sensitive, Closed(), parallel_from=2)
    except BrokenPipeError:
        pass
    try:
        os.waitpid(-1, os.WNOHANG)
        print("a child is left")
    except ChildProcessError:
        print("no child left")
"""


def _run(folder: Path, case: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(folder), case],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@two_processors
def test_a_killed_child_costs_only_time(tmp_path: Path) -> None:
    assert _run(_desired(tmp_path / "desired", 41), "child-killed") == "rendered here True"


@two_processors
def test_the_child_does_not_outlive_a_failed_write(tmp_path: Path) -> None:
    assert _run(_desired(tmp_path / "desired", 41), "closed") == "no child left"
