"""Start-up stays cheap: a command imports only what it needs (issue #9).

Each test runs the real CLI in a fresh interpreter (`python -c` that runs `reconciler` as
`__main__`, then writes the names in `sys.modules` to a file), on a SQLite state, and fails when a
module that the command has no use for was imported: the PostgreSQL driver, the HTTP client,
the terminal renderer and jsonschema (which only explains an invalid file) on any plan or
validate of valid files.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

# Never imported by `plan` (SQLite state) or `validate` of valid files: jsonschema only explains
# an invalid document (the yes/no verdict is jsonschema-rs's).
NEVER_ON_PLAN = ("psycopg", "httpx", "httpcore", "rich", "jsonschema")
# Nor, for a directory of JSON files without a .reconcilerignore, the YAML and TOML parsers, the
# ignore-file matcher, or the retry library (only a refresh calls a provider).
NEVER_ON_JSON_PLAN = (*NEVER_ON_PLAN, "yaml", "tomllib", "pathspec", "tenacity")

_RUNNER = r"""
import json, runpy, sys
out = sys.argv.pop(1)
code = 0
try:
    runpy.run_module("reconciler", run_name="__main__", alter_sys=True)
except SystemExit as stop:
    code = stop.code
with open(out, "w", encoding="utf-8") as f:
    json.dump({"code": code, "modules": sorted(sys.modules)}, f)
"""


def imported_by(args: list[str], cwd: Path, state: str | None = None) -> tuple[int, set[str]]:
    """Run `reconciler ARGS` in a fresh interpreter (state: a SQLite file in `cwd` unless given);
    its exit code and every module it imported."""
    out = cwd / "modules.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_")}
    env["RECONCILER_STATE"] = state or str(cwd / "state.db")
    done = subprocess.run(
        [sys.executable, "-c", _RUNNER, str(out), *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.exists(), done.stderr
    found = json.loads(out.read_text("utf-8"))
    return int(found["code"]), set(found["modules"])


def _top_level(modules: set[str]) -> set[str]:
    return {name.split(".", 1)[0] for name in modules}


def _forbidden(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(set(names) & _top_level(modules))


@pytest.fixture
def json_dir(tmp_path: Path) -> Path:
    """A directory of valid JSON manifests only (the examples' support.json), no ignore file."""
    desired = tmp_path / "desired"
    desired.mkdir()
    shutil.copy(EXAMPLES / "support.json", desired / "support.json")
    return desired


@pytest.mark.parametrize("command", [["plan", "--detailed-exitcode"], ["validate"]])
def test_plan_and_validate_of_valid_json_import_no_driver_client_or_renderer(
    json_dir: Path, command: list[str]
) -> None:
    code, modules = imported_by([*command, str(json_dir)], json_dir.parent)
    assert code in (0, 2)
    assert "reconciler.commands" in modules  # the runner did run the command
    assert _forbidden(modules, NEVER_ON_JSON_PLAN) == []


def test_plan_of_every_example_format_imports_no_driver_client_or_renderer(
    tmp_path: Path,
) -> None:
    """JSON, TOML and YAML together (the examples directory, both providers: Alibaba Cloud
    lists its agents to refresh even an empty state, so --refresh=false) need none of them."""
    code, modules = imported_by(
        ["plan", "--refresh=false", "--detailed-exitcode", str(EXAMPLES)], tmp_path
    )
    assert code == 2
    assert _forbidden(modules, NEVER_ON_PLAN) == []
    # The control: these files do need the parsers and the ignore-file matcher.
    assert {"yaml", "tomllib", "pathspec"} <= _top_level(modules)


def test_the_guard_sees_an_import_when_one_happens(tmp_path: Path) -> None:
    """The method can fail: `state list` on a postgresql:// URL does import the driver."""
    url = "postgresql://nobody@127.0.0.1:1/none?connect_timeout=1"
    code, modules = imported_by(["state", "list"], tmp_path, state=url)
    assert code != 0  # nothing listens there
    assert "psycopg" in _top_level(modules)


def test_an_invalid_file_is_explained_by_jsonschema(tmp_path: Path) -> None:
    """The other side of the lazy import: a failure is still explained, by jsonschema."""
    desired = tmp_path / "desired"
    desired.mkdir()
    text = (EXAMPLES / "support.json").read_text("utf-8")
    (desired / "support.json").write_text(text.replace('"IdleTimeout": 300', '"IdleTimeout": -1'))
    code, modules = imported_by(["validate", str(desired)], tmp_path)
    assert code == 1
    assert "jsonschema" in modules
    assert _forbidden(modules, ("psycopg", "httpx", "rich")) == []
