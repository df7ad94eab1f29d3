"""New-user traps (issue #11 items 8, 10, 12): files beside the manifests that are not manifests,
a pre-commit hook that validated the whole repository, and settings typos that were ignored.

Each case runs the CLI as a subprocess, as a user would, and checks the exit code, the exact
message and that nothing was created or called.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

import yaml

from tests.apply_helpers import REPO, Workspace, write_manifest
from tests.apply_helpers import session as literal_session


def session(name: str) -> dict[str, Any]:
    """A session whose secrets are all references, so its plan can be saved."""
    entry = literal_session(name)
    del entry["spec"]["Config"]["SubtitleConfig"]  # it holds a literal signature
    return entry


# -- item 8: reconciler.toml and saved plans beside the manifests ---------------------------


def test_settings_file_in_the_walked_directory_is_not_a_manifest(ws: Workspace) -> None:
    # A GitOps repository often keeps its settings beside the manifests and passes `.`.
    write_manifest(ws.root / "sessions.json", [session("lobby")])
    (ws.root / "reconciler.toml").write_text("max_stops = 5\n")
    (ws.root / "team").mkdir()
    (ws.root / "team" / "reconciler.toml").write_text('state = "elsewhere.db"\n')
    result = ws.run("validate", ".")
    assert result.code == 0, str(result)
    assert result.out == "Valid: 1 session(s) declared.\n"
    plan = ws.run("plan", ".")
    assert plan.code == 0, str(plan)
    assert "Plan: 1 to start." in plan.out


def test_saved_plan_beside_the_manifests_is_not_a_manifest(ws: Workspace) -> None:
    ws.declare([session("lobby"), session("kiosk")])
    saved = ws.manifests / "reviewed.plan"
    made = ws.run("plan", str(ws.manifests), "--out", str(ws.manifests / "plan.json"))
    assert made.code == 0, str(made)
    (ws.manifests / "plan.json").rename(ws.manifests / "plan-copy.json")
    saved.write_text((ws.manifests / "plan-copy.json").read_text())
    result = ws.run("validate", str(ws.manifests))
    assert result.code == 0, str(result)
    assert result.out == "Valid: 2 session(s) declared.\n"
    again = ws.run("plan", str(ws.manifests), "--detailed-exitcode")
    assert again.code == 2, str(again)
    assert "Plan: 2 to start." in again.out
    assert ws.emulator.calls()["total"] == 0


def test_saved_plan_named_as_a_manifest_says_to_apply_it(ws: Workspace) -> None:
    ws.declare([session("lobby")])
    plan_file = ws.root / "plan.json"
    assert ws.run("plan", str(ws.manifests), "--out", str(plan_file)).code == 0
    result = ws.run("validate", str(plan_file))
    assert result.code == 1
    assert result.err.splitlines()[0] == (
        f"{plan_file}: /: this is a saved plan, not a manifest: apply it with "
        f"`reconciler apply {plan_file}`"
    )


# -- item 10: the pre-commit hook validates the configured directories only ------------------


def _hook() -> dict[str, object]:
    (hook,) = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())
    assert isinstance(hook, dict)
    return hook


def _run_hook(ws: Workspace, hook: dict[str, object], changed: list[str]) -> tuple[int, str]:
    """Run the hook the way pre-commit does: entry, then args, then (unless pass_filenames is
    false) the changed files that match `files`."""
    import re
    import subprocess
    import sys

    entry = shlex.split(str(hook["entry"]))
    assert entry[0] == "reconciler"
    args = [str(arg) for arg in hook.get("args", [])]  # type: ignore[attr-defined]
    pattern = re.compile(str(hook["files"]))
    files = [name for name in changed if pattern.search(name)]
    assert files, "the hook would not even run"
    if hook.get("pass_filenames", True):
        args += files
    done = subprocess.run(
        [sys.executable, "-m", "reconciler", *entry[1:], *args],
        cwd=ws.root,
        capture_output=True,
        text=True,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


def test_pre_commit_hook_ignores_the_repositorys_other_config_files(ws: Workspace) -> None:
    hook = _hook()
    assert hook["pass_filenames"] is False
    write_manifest(ws.root / "sessions" / "lobby.json", [session("lobby")])
    (ws.root / "pyproject.toml").write_text('[project]\nname = "voice-ops"\n')
    workflows = ws.root / ".github" / "workflows"
    workflows.mkdir(parents=True)
    (workflows / "ci.yml").write_text("on: push\njobs: {}\n")
    (ws.root / "package.json").write_text('{"name": "x"}\n')
    changed = ["pyproject.toml", ".github/workflows/ci.yml", "package.json", "sessions/lobby.json"]
    code, output = _run_hook(ws, hook, changed)
    assert code == 0, output
    assert output == "Valid: 1 session(s) declared.\n"
    # A broken manifest in the configured directory still fails the commit.
    (ws.root / "sessions" / "lobby.json").write_text('{"sessions": [{"name": "x"}]}')
    code, output = _run_hook(ws, hook, ["sessions/lobby.json"])
    assert code == 1 and "sessions/lobby.json" in output


# -- item 12: strict settings ----------------------------------------------------------------


def test_unknown_environment_variable_is_an_error_with_a_hint(ws: Workspace) -> None:
    ws.declare([session("lobby")])
    env = ws.env(max_stop="3")
    result = ws.run("plan", str(ws.manifests), env=env)
    assert result.code == 1
    assert result.out == ""
    assert result.err == (
        "error: unknown setting RECONCILER_MAX_STOP in the environment "
        "(did you mean RECONCILER_MAX_STOPS?)\n"
    )
    assert not ws.state.parent.exists()


def test_misspelt_settings_file_keys_are_errors_with_their_lines(ws: Workspace) -> None:
    ws.declare([session("lobby")])
    (ws.root / "reconciler.toml").write_text(
        '# settings\nmax_stop = 5\n\n[volcengine]\nregon = "cn-beijing"\ntimeout = 3\n'
    )
    result = ws.run("apply", str(ws.manifests), "--auto-approve")
    assert result.code == 1
    assert sorted(result.err.splitlines()) == [
        'error: reconciler.toml:2: max_stop: unknown setting "max_stop" (did you mean '
        '"max_stops"?)',
        'error: reconciler.toml:5: volcengine.regon: unknown setting "regon" (did you mean '
        '"region"?)',
    ]
    assert ws.emulator.calls()["total"] == 0
    assert not ws.state.parent.exists()


def test_bad_values_name_the_variable_one_line_each(ws: Workspace) -> None:
    ws.declare([session("lobby")])
    env = ws.env(max_stops="-1", parallelism="lots")
    env["RECONCILER_VOLCENGINE__SECRET_ACCESS_KEY"] = "x"
    env["RECONCILER_VOLCENGINE__TIMEOUT"] = "0"
    result = ws.run("plan", str(ws.manifests), env=env)
    assert result.code == 1
    assert sorted(result.err.splitlines()) == [
        'error: RECONCILER_MAX_STOPS: must be greater than or equal to 0 (got "-1")',
        "error: RECONCILER_PARALLELISM: must be a valid integer, unable to parse string as an "
        'integer (got "lots")',
        'error: RECONCILER_VOLCENGINE__TIMEOUT: must be greater than 0 (got "0")',
    ]
    assert "Traceback" not in result.err and "pydantic" not in result.err


def test_a_bad_settings_file_is_one_line_and_secrets_are_never_echoed(ws: Workspace) -> None:
    ws.declare([session("lobby")])
    (ws.root / "reconciler.toml").write_text("max_stops = [\n")
    result = ws.run("plan", str(ws.manifests))
    assert result.code == 1
    assert len(result.err.splitlines()) == 1
    assert result.err.startswith("error: reconciler.toml: invalid TOML: ")
    (ws.root / "reconciler.toml").write_text(
        "[volcengine]\nsecret_access_key = 12345678901234567890\n"
    )
    env = ws.env()
    del env["RECONCILER_VOLCENGINE__SECRET_ACCESS_KEY"]  # the file's value is the one read
    result = ws.run("plan", str(ws.manifests), env=env)
    assert result.code == 1
    assert result.err == (
        "error: reconciler.toml:2: volcengine.secret_access_key: must be a valid string\n"
    )
    assert "12345678901234567890" not in result.err


def test_every_documented_setting_is_accepted(ws: Workspace) -> None:
    """The README's settings table and the model agree: no documented name is refused."""
    ws.declare([session("lobby")])
    env = ws.env(
        plan_max_age="60",
        emulator__port="8791",
        emulator__access_key_id="AKx",
        emulator__secret_access_key="s",
    )
    env.update(
        {
            "RECONCILER_VOLCENGINE__REGION": "cn-north-1",
            "RECONCILER_VOLCENGINE__API_VERSION": "2024-12-01",
            "RECONCILER_VOLCENGINE__SESSION_TOKEN": "",
        }
    )
    result = ws.run("plan", str(ws.manifests), "--format", "json", env=env)
    assert result.code == 0, str(result)
    assert json.loads(result.out)["summary"]["create"] == 1
