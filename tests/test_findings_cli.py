"""Issue #11, items 14b and 18 (CLI part): the command line's own surface, run as a user runs it
(`python -m reconciler` as a subprocess) against the real emulator and a real SQLite file.

- a bad option value is a usage error: exit 2, argparse's one line, nothing read or created;
- `plan --out` to a directory or a special path, and the emulator on a busy port: exit 1, one
  `error:` line, no traceback, no temporary file left behind;
- `--version`, each subcommand's `--help` (PATH, exit codes, settings), the emulator knobs'
  defaults, and Ctrl-C during an apply: `interrupted`, exit 130, and the next apply finishes.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from apply_helpers import (
    Workspace,
    assert_cloud_matches,
    emulator_server,
    ok_calls,
    run_cli,
    session,
    spawn_cli,
)

from reconciler.emulator.volcengine import Faults
from reconciler.settings import Settings


def no_traceback(stderr: str) -> None:
    assert "Traceback" not in stderr, stderr


# -- 14b: option values are usage errors ------------------------------------------------------

BAD_VALUES = [
    (["emulator", "--port", "99999"], "argument --port: a port is 0 to 65535, got 99999"),
    (["emulator", "--port", "http"], "argument --port: expected a port number, got 'http'"),
    (["emulator", "--error-rate", "2"], "argument --error-rate: a rate is between 0 and 1, got 2"),
    (["emulator", "--qps", "-1"], "argument --qps: must be 0 or more, got -1"),
    (["emulator", "--latency", "-1"], "argument --latency: must be 0 or more, got -1"),
    (["emulator", "--latency", "nan"], "argument --latency: expected a finite number, got 'nan'"),
    (["plan", "desired", "--max-stops", "-1"], "argument --max-stops: must be 0 or more, got -1"),
    (
        ["apply", "desired", "--max-stops", "x"],
        "argument --max-stops: expected a whole number, got 'x'",
    ),
]


@pytest.mark.parametrize(
    ("args", "message"), BAD_VALUES, ids=[" ".join(args) for args, _ in BAD_VALUES]
)
def test_a_bad_option_value_is_a_usage_error(ws: Workspace, args: list[str], message: str) -> None:
    ws.declare([session("a")])
    result = ws.run(*args)
    assert result.code == 2, str(result)
    assert result.err.splitlines()[-1] == f"reconciler {args[0]}: error: {message}"
    assert result.err.startswith("usage: reconciler " + args[0])
    assert result.out == ""
    no_traceback(result.err)
    assert not ws.state.parent.exists(), "a usage error opened the state"
    assert ws.emulator.calls()["total"] == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["apply", "desired", "--format", "json"],
            "reconciler apply: error: --format json needs --auto-approve",
        ),
        (
            ["emulator", "--error-rate", "0.6", "--throttle-rate", "0.6"],
            "reconciler emulator: error: --error-rate, --throttle-rate, --lost-response-rate "
            "and --late-504-rate are shares of the same calls and must sum to at most 1",
        ),
    ],
    ids=["json-without-auto-approve", "rates-over-one"],
)
def test_options_that_do_not_go_together_are_a_usage_error(
    ws: Workspace, args: list[str], message: str
) -> None:
    ws.declare([session("a")])
    result = ws.run(*args)
    assert result.code == 2, str(result)
    assert result.err == message + "\n"
    assert result.out == ""
    assert not ws.state.parent.exists()
    assert ws.emulator.calls()["total"] == 0


# -- 14b: plan --out ------------------------------------------------------------------------


def saveable(name: str) -> dict[str, Any]:
    """A session a saved plan may hold: every sensitive field a reference."""
    entry = session(name)
    entry["spec"]["Config"]["SubtitleConfig"]["ServerMessageSignature"] = "${env:TEST_TTS_TOKEN}"
    return entry


def leftovers(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.name.endswith(".tmp")]


def test_plan_out_to_a_directory_is_refused_and_leaves_nothing(ws: Workspace) -> None:
    ws.declare([saveable("a")])
    target = ws.root / "plans"
    target.mkdir()
    result = ws.run("plan", str(ws.manifests), "--out", str(target))
    assert result.code == 1, str(result)
    assert result.err == f"error: cannot write the plan to {target}: it is a directory\n"
    assert "+ create a" in result.out  # the plan itself was shown
    assert list(target.iterdir()) == []
    assert leftovers(ws.root) == []


def test_plan_out_to_a_special_file_is_refused_and_leaves_it_alone(ws: Workspace) -> None:
    ws.declare([saveable("a")])
    fifo = ws.root / "pipe"
    os.mkfifo(fifo)
    result = ws.run("plan", str(ws.manifests), "--out", str(fifo))
    assert result.code == 1, str(result)
    assert result.err == f"error: cannot write the plan to {fifo}: it is not a regular file\n"
    assert fifo.is_fifo()
    assert leftovers(ws.root) == []


@pytest.mark.skipif(not Path("/proc/version").is_file(), reason="needs Linux's /proc")
def test_plan_out_where_no_file_can_be_created_says_why(ws: Workspace) -> None:
    ws.declare([saveable("a")])
    result = ws.run("plan", str(ws.manifests), "--out", "/proc/version")
    assert result.code == 1, str(result)
    # The state is created first (the plan is bound to it); only the write itself can tell.
    assert result.err.splitlines()[-1] == (
        "error: cannot write the plan to /proc/version: cannot create a file in /proc "
        "(no such file or directory)"
    )
    assert not any(name.endswith(".tmp") for name in os.listdir("/proc"))


def test_plan_out_still_writes_a_plan_where_it_can(ws: Workspace) -> None:
    ws.declare([saveable("a")])
    target = ws.root / "new" / "dir" / "plan.json"
    result = ws.run("plan", str(ws.manifests), "--out", str(target))
    assert result.code == 0, str(result)
    assert target.is_file() and '"reconciler-plan"' in target.read_text()
    assert leftovers(ws.root) == []


# -- 14b: the emulator on a busy port --------------------------------------------------------


def test_the_emulator_on_a_busy_port_says_so_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_cli(["emulator", "--port", str(port)], {}, tmp_path, timeout=60)
    assert done.returncode == 1, done.stderr
    assert done.stderr == f"error: cannot listen on 127.0.0.1:{port}: address already in use\n"
    assert done.stdout == ""


# -- 18: --version, --help -------------------------------------------------------------------


def test_version(tmp_path: Path) -> None:
    done = run_cli(["--version"], {}, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"reconciler {metadata.version('reconciler')}\n"


PATH_TEXT = "Directories are walked\nrecursively in a stable (sorted) order; hidden files"


@pytest.mark.parametrize(
    ("command", "mentions"),
    [
        ([], ["exit codes (every command):", "130  interrupted (Ctrl-C)", "usage error"]),
        (["validate"], [PATH_TEXT, "0    every file is valid", "settings read: none"]),
        (
            ["plan"],
            [PATH_TEXT, "with --detailed-exitcode: the plan has changes", "RECONCILER_STATE"],
        ),
        (
            ["apply"],
            [PATH_TEXT, "PLANFILE", "3    partly applied", "RECONCILER_PARALLELISM"],
        ),
        (["state"], ["settings read: RECONCILER_STATE", "1    error: no such record"]),
        (["emulator"], ["1    cannot listen", "RECONCILER_EMULATOR__PORT"]),
        (["watch"], [PATH_TEXT, "0    stopped by SIGTERM/SIGINT", "RECONCILER_LISTEN"]),
        (["probe"], [PATH_TEXT, "1    an endpoint failed", "data: [DONE]"]),
        (["token"], ["0    the token was printed", "RECONCILER_VOLCENGINE__APP_KEY"]),
        (["token", "volcengine"], ["--no-publish", "RECONCILER_VOLCENGINE__APP_KEY"]),
        (["token", "aliyun"], ["--channel", "RECONCILER_ALIYUN__ARTC_APP_KEY"]),
    ],
    ids=lambda v: " ".join(v) if v and isinstance(v[0], str) and " " not in v[0] else "",
)
def test_each_help_explains_paths_exit_codes_and_settings(
    tmp_path: Path, command: list[str], mentions: list[str]
) -> None:
    done = run_cli([*command, "--help"], {}, tmp_path)
    assert done.returncode == 0, done.stderr
    for text in mentions:
        assert text in done.stdout, f"{text!r} missing from:\n{done.stdout}"
    if command:
        assert "2    " in done.stdout and "usage error" in done.stdout
    # Ctrl-C is how the emulator and the daemon are stopped: exit 0.
    if command and command not in (["emulator"], ["watch"]):
        assert "130  interrupted (Ctrl-C)" in done.stdout


def test_every_emulator_knob_has_help_and_its_default(tmp_path: Path) -> None:
    done = run_cli(["emulator", "--help"], {"COLUMNS": "400"}, tmp_path)
    assert done.returncode == 0, done.stderr
    options = done.stdout.split("options:\n", 1)[1].split("\n\n", 1)[0]
    knobs: list[str] = []  # one option with its help, however argparse laid it out
    for line in options.splitlines():
        if line.startswith("  --"):
            knobs.append(line.strip())
        elif knobs and line.startswith("    "):
            knobs[-1] += " " + line.strip()
    assert len(knobs) == 18, options
    for knob in knobs:
        assert "(default: " in knob, knob
    # The defaults it names for the settings-backed options are the settings' own.
    defaults = Settings()
    for value in (
        str(defaults.emulator.port),
        defaults.emulator.access_key_id,
        defaults.emulator.secret_access_key.get_secret_value(),
        defaults.volcengine.region,
        defaults.volcengine.api_version,
    ):
        assert f"else {value})" in options, value


# -- 18: Ctrl-C ------------------------------------------------------------------------------


def test_ctrl_c_during_apply_exits_130_and_the_next_apply_finishes(tmp_path: Path) -> None:
    sessions = [session(f"s{i}") for i in range(6)]
    with emulator_server(Faults(latency=0.5)) as server:
        ws = Workspace(tmp_path, server, extra={"parallelism": "1"})
        ws.declare(sessions)
        child = spawn_cli(["apply", str(ws.manifests), "--auto-approve"], ws.env(), ws.root)
        try:
            # Interrupt mid-run: once one Start is answered, the next is in flight.
            deadline = time.monotonic() + 60
            while ok_calls(server) < 1 and child.poll() is None:
                assert time.monotonic() < deadline, "the apply never reached the emulator"
                time.sleep(0.02)
            child.send_signal(signal.SIGINT)
            _, stderr = child.communicate(timeout=60)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        assert child.returncode == 130, stderr
        assert stderr.splitlines()[-1] == "interrupted"
        no_traceback(stderr)
        assert ok_calls(server) < len(sessions)

        server.set_faults(Faults())
        again = ws.run("apply", str(ws.manifests), "--auto-approve")
        assert again.code == 0, str(again)
        assert_cloud_matches(server, sessions)


def test_ctrl_c_at_the_confirmation_prompt_exits_130(ws: Workspace) -> None:
    """`apply` without --auto-approve asks on a terminal; Ctrl-C there changes nothing."""
    import pty

    ws.declare([session("a")])
    leader, follower = pty.openpty()
    child = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "apply", str(ws.manifests)],
        cwd=ws.root,
        env={**_environ(), **ws.env()},
        stdin=follower,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    os.close(follower)
    try:
        assert child.stdout is not None
        out = b""
        deadline = time.monotonic() + 60
        # The prompt is written once input() is about to read: Ctrl-C lands in it.
        while b"Apply these changes?" not in out:
            assert time.monotonic() < deadline and child.poll() is None, out
            out += os.read(child.stdout.fileno(), 4096)
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=60)
        stderr = err.decode()
    finally:
        os.close(leader)
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 130, stderr
    assert stderr.splitlines()[-1] == "interrupted"
    no_traceback(stderr)
    assert ws.emulator.calls()["total"] == 0
    assert ws.records() == []


def _environ() -> dict[str, str]:
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("RECONCILER_", "VOLC_"))
    } | {"PYTHONUNBUFFERED": "1"}
