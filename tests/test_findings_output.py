"""Issue #11, items 15 and 16: what `validate`, `plan` and `apply` print, run as a user runs them
(`python -m reconciler`, mostly as a subprocess) against the real emulator and SQLite state.

- `validate --format json`, and the GitHub problem matcher parsing real `validate` lines;
- `plan`'s notes on stdout with the plan; `create` actions listing the spec they send (sensitive
  values masked, references as written) in text and Markdown;
- `apply`: a line per finished change (kept on a terminal, above the progress bar), each
  failure once, `--format json`, "adopted", and unconfirmed announcements that are no failure.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from apply_helpers import (
    REPO,
    SECRET_ENV,
    SECRET_VALUES,
    Workspace,
    _child_environ,
    identity,
    resolve,
    running,
    session,
    start_foreign_task,
)

from reconciler.core.model import DesiredSession, JournalOp, StateMeta
from reconciler.core.plan import make_plan
from reconciler.core.render_markdown import GITHUB_COMMENT_LIMIT, render_markdown
from reconciler.emulator.volcengine import Faults
from reconciler.providers.registry import provider_rules
from reconciler.state.sqlite import SqliteStateStore
from reconciler.workspace import schema_set

MATCHER = REPO / "examples" / "ci" / "reconciler-problem-matcher.json"
NOTICE = {"id": "notice-1", "message": "We close in ten minutes."}

RULES = provider_rules()


def broken_manifests(root: Path) -> Path:
    """A JSON file with schema problems (no line) and a YAML one (with lines)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "a.json").write_text(
        json.dumps({"sessions": [{"name": "a", "provider": "volcengine", "spec": {}}]})
    )
    (root / "b.yaml").write_text(
        "sessions:\n"
        "  - name: b\n"
        "    provider: volcengine\n"
        "    spec:\n"
        '      AppId: "661e4b8f2f1d3c0123456789"\n'
        "      Bogus: 1\n"
    )
    return root


# -- 16: validate --format json and the problem matcher --------------------------------------


def test_validate_json_lists_every_problem_as_the_text_form_does(ws: Workspace) -> None:
    root = broken_manifests(ws.root / "broken")
    text = ws.run("validate", str(root))
    as_json = ws.run("validate", str(root), "--format", "json")
    assert text.code == as_json.code == 1
    assert as_json.err == ""
    document = json.loads(as_json.out)
    assert document["valid"] is False
    problems = document["problems"]
    assert {tuple(sorted(p)) for p in problems} == {("file", "line", "message", "pointer")}
    assert {p["line"] is None for p in problems} == {True, False}  # both kinds are there
    rendered = [
        f"{p['file']}{'' if p['line'] is None else ':' + str(p['line'])}: "
        f"{p['pointer']}: {p['message']}"
        for p in problems
    ]
    assert rendered == text.err.splitlines()[:-1]
    assert text.err.splitlines()[-1] == f"{len(problems)} problems found."
    assert {
        "file": str(root / "b.yaml"),
        "line": 6,
        "pointer": "/sessions/0/spec/Bogus",
        "message": 'unknown field "Bogus"',
    } in problems


def test_validate_json_of_valid_files(ws: Workspace) -> None:
    ws.declare([session("a"), session("b")])
    result = ws.run("validate", str(ws.manifests), "--format", "json")
    assert result.code == 0, str(result)
    assert json.loads(result.out) == {"valid": True, "sessions": 2}
    assert result.err == ""


def test_the_problem_matcher_parses_real_validate_lines(ws: Workspace) -> None:
    matcher = json.loads(MATCHER.read_text())["problemMatcher"]
    assert len(matcher) == 1 and len(matcher[0]["pattern"]) == 1
    pattern = matcher[0]["pattern"][0]
    regexp = re.compile(pattern["regexp"])
    root = broken_manifests(ws.root / "broken")
    (root / "c.json").write_text('{"sessions": [\n  {"name": \n')  # a syntax error, with a line
    lines = ws.run("validate", str(root)).err.splitlines()
    expected = json.loads(ws.run("validate", str(root), "--format", "json").out)["problems"]
    *problem_lines, summary = lines
    assert regexp.match(summary) is None
    assert len(problem_lines) == len(expected) >= 3
    for line, problem in zip(problem_lines, expected, strict=True):
        match = regexp.match(line)
        assert match is not None, line
        assert match.group(pattern["file"]) == problem["file"]
        line_number = match.group(pattern["line"])
        assert (None if line_number is None else int(line_number)) == problem["line"]
        assert match.group(pattern["message"]) == f"{problem['pointer']}: {problem['message']}"


def test_the_github_workflow_registers_the_matcher_before_validate() -> None:
    workflow = (REPO / "examples" / "ci" / "github-actions.yml").read_text()
    registered = workflow.index('echo "::add-matcher::.github/reconciler-problem-matcher.json"')
    assert registered < workflow.index("reconciler validate sessions/")


# -- 16: plan notes on stdout; create actions show the spec ----------------------------------


def leave_a_call_of_unknown_outcome(ws: Workspace, name: str) -> None:
    """What a killed apply leaves: an intent without an outcome, in the real state file."""
    ws.state.parent.mkdir(parents=True, exist_ok=True)
    with SqliteStateStore(ws.state) as store:
        entry = session(name)
        store.begin_intent(
            name,
            JournalOp.START,
            "volcengine",
            "/".join(identity(entry)),
            json.dumps({"provider_ids": {}, "fingerprint": "unknown"}),
        )


NOTE = (
    "1 call(s) of an earlier apply have an unknown outcome; the next `reconciler apply "
    "PATH...` finishes them before anything else, and a saved plan is refused as stale until "
    "then."
)


def test_plan_notes_go_to_stdout_with_the_plan_in_every_format(ws: Workspace) -> None:
    ws.declare([session("a")])
    leave_a_call_of_unknown_outcome(ws, "a")
    text = ws.run("plan", str(ws.manifests))
    assert text.code == 0, str(text)
    assert f"Note: {NOTE}\n" in text.out
    assert text.err == ""
    markdown = ws.run("plan", str(ws.manifests), "--format", "markdown")
    assert f"> {NOTE}\n" in markdown.out and markdown.err == ""
    as_json = ws.run("plan", str(ws.manifests), "--format", "json")
    assert json.loads(as_json.out)["notes"] == [NOTE] and as_json.err == ""
    # Status messages about files written stay on stderr.
    saved = ws.run("plan", str(ws.manifests), "--out", str(ws.root / "plan.json"))
    assert saved.code == 1  # the session's literal signature cannot be saved; said on stderr
    assert f"Note: {NOTE}" in saved.out and "literal secret" in saved.err


def test_a_create_lists_the_spec_it_sends_with_secrets_masked(ws: Workspace) -> None:
    ws.declare([session("a", room="lobby")])
    text = ws.run("plan", str(ws.manifests))
    assert text.code == 0, str(text)
    lines = text.out.splitlines()
    start = lines.index("  + create a  (volcengine 661e4b8f2f1d3c0123456789/lobby/task-a)")
    block = lines[start : lines.index("", start)]
    assert block[1:4] == [
        "      declared, not running",
        '      + /AppId: "661e4b8f2f1d3c0123456789"',
        '      + /RoomId: "lobby"',
    ]
    for line in (
        '      + /Config/LLMConfig/APIKey: "${env:TEST_LLM_API_KEY}"',
        '      + /Config/TTSConfig/ProviderParams/app/token: "${env:TEST_TTS_TOKEN}"',
        "      + /Config/SubtitleConfig/ServerMessageSignature: (sensitive)",
        "      + /Config/LLMConfig/Temperature: 0.5",
        '      + /AgentConfig/TargetUserId/0: "user-a"',
    ):
        assert line in block
    markdown = ws.run("plan", str(ws.manifests), "--format", "markdown").out
    details = markdown[markdown.index("<details><summary>+ create a</summary>") :]
    details = details[: details.index("</details>")]
    assert "  + /Config/SubtitleConfig/ServerMessageSignature: (sensitive)" in details
    assert '  + /Config/LLMConfig/APIKey: "${env:TEST_LLM_API_KEY}"' in details
    for output in (text.out, text.err, markdown):
        for secret in SECRET_VALUES:
            assert secret not in output


def test_the_markdown_cap_holds_with_the_specs_of_many_creates() -> None:
    app = "661e4b8f2f1d3c0123456789"
    sessions = [
        DesiredSession(
            name=f"s{i:04d}",
            provider="volcengine",
            identity=f"{app}/room-{i}/task-{i}",
            spec=session(f"s{i:04d}")["spec"],
        )
        for i in range(300)
    ]
    sensitive = schema_set().sensitive
    plan = make_plan(sessions, [], StateMeta("l", 1, b"k" * 32), sensitive, {}, rules=RULES)
    text = render_markdown(plan, sensitive, artifact="plan.json")
    assert len(text) <= GITHUB_COMMENT_LIMIT
    assert "more action details not shown" in text and "`plan.json`" in text
    assert "+ /RoomId:" in text  # the specs are there, as far as they fit
    assert SECRET_VALUES[-1] not in text  # the literal signature is masked


# -- 15: apply's per-session lines, failures once, the summary -------------------------------


def one_foreign_of_three(ws: Workspace) -> list[dict[str, Any]]:
    """a, b, c declared; b's task already runs, started by someone else."""
    start_foreign_task(ws.emulator.url, resolve(session("b", temperature=0.1)["spec"], SECRET_ENV))
    sessions = [session("a"), session("b"), session("c")]
    ws.declare(sessions)
    return sessions


def test_plain_apply_prints_a_line_per_change_and_each_failure_once(ws: Workspace) -> None:
    one_foreign_of_three(ws)
    result = ws.run("apply", str(ws.manifests), "--auto-approve")
    assert result.code == 3, str(result)
    lines = result.err.splitlines()
    assert sorted(lines[:2]) == ["  ✓ create a: started", "  ✓ create c: started"]
    assert len(lines) == 3
    assert lines[2].startswith("  ✗ create b: start failed: HTTP 400 ")
    assert "--adopt-running" in lines[2]
    assert result.err.count("create b") == 1
    assert result.out.endswith("Plan: 3 to start.\nApply: 2 succeeded, 1 failed.\n")
    assert "\x1b[" not in result.err  # no colour where there is no terminal


def test_adopt_running_says_adopted(ws: Workspace) -> None:
    one_foreign_of_three(ws)
    result = ws.run("apply", str(ws.manifests), "--auto-approve", "--adopt-running")
    assert result.code == 0, str(result)
    assert "  ✓ create b: adopted (already running; taken over as it is)" in result.err.splitlines()
    assert "  ✓ create a: started" in result.err.splitlines()
    assert result.out.endswith("Apply: 2 succeeded, 1 adopted, 0 failed.\n")


def test_an_announcement_whose_answer_was_lost_is_not_a_failure(ws: Workspace) -> None:
    ws.declare([session("desk")])
    assert ws.apply().code == 0
    ws.declare([session("desk", announcements=[NOTICE])])
    ws.emulator.set_faults(Faults(lost_response_rate=1.0, seed=1))
    result = ws.run("apply", str(ws.manifests), "--auto-approve")
    assert result.code == 0, str(result)
    [line] = result.err.splitlines()
    assert line.startswith(
        "  ! update desk: delivery unconfirmed: announcement notice-1 may have played, its "
        "answer was lost ("
    )
    assert line.endswith("); recorded as delivered, never repeated")
    assert result.out.endswith("Apply: 0 succeeded, 1 unconfirmed, 0 failed.\n")
    ws.emulator.set_faults(Faults())
    assert "No changes" in ws.run("plan", str(ws.manifests)).out


def test_recovering_an_announcement_of_unknown_outcome_is_not_a_failure(ws: Workspace) -> None:
    ws.declare([session("desk")])
    assert ws.apply().code == 0
    [record] = ws.records()
    with SqliteStateStore(ws.state) as store:  # a run killed while announcing
        store.begin_intent(
            "desk",
            JournalOp.UPDATE,
            "volcengine",
            record["identity"],
            json.dumps({"provider_ids": record["provider_ids"], "announcement": NOTICE}),
        )
    ws.declare([session("desk", announcements=[NOTICE])])
    before = ws.emulator.calls()["total"]
    result = ws.run("apply", str(ws.manifests), "--auto-approve")
    assert result.code == 0, str(result)
    assert (
        "  ! recover update desk: delivery unconfirmed: announcement notice-1 may have played "
        "before the run that sent it was killed; recorded as delivered, never repeated"
    ) in result.err.splitlines()
    assert result.out.endswith(
        "No changes. 1 running session(s) match the desired state.\n"
        "Apply: 0 succeeded, 1 unconfirmed, 0 failed.\n"
    )
    assert ws.emulator.calls()["total"] == before  # never played twice
    assert running(ws.emulator)[identity(session("desk"))]["Updates"] == []


# -- 15: apply --format json -----------------------------------------------------------------


def test_apply_json_is_one_document_on_stdout(ws: Workspace) -> None:
    one_foreign_of_three(ws)
    result = ws.run("apply", str(ws.manifests), "--auto-approve", "--format", "json")
    assert result.code == 3, str(result)
    document = json.loads(result.out)  # the whole of stdout is one JSON document
    assert document["kind"] == "reconciler-apply-result"
    assert [a["name"] for a in document["plan"]["actions"]] == ["a", "b", "c"]
    assert document["plan"]["summary"]["create"] == 3
    results = {r["name"]: r for r in document["results"]}
    assert results["a"] == {
        "name": "a",
        "action": "create",
        "outcome": "ok",
        "remark": None,
        "detail": "started",
    }
    assert results["b"]["outcome"] == "failed"
    assert results["b"]["detail"].startswith("start failed: HTTP 400 ")
    assert document["summary"] == {
        "succeeded": 2,
        "adopted": 0,
        "unconfirmed": 0,
        "failed": 1,
        "not_attempted": 0,
        "text": "Apply: 2 succeeded, 1 failed.",
    }
    assert document["aborted"] is None
    assert document["exit_code"] == 3
    assert result.err.splitlines()[-1] == "Apply: 2 succeeded, 1 failed."
    for secret in SECRET_VALUES:
        assert secret not in result.out and secret not in result.err


def test_apply_json_when_nothing_is_to_do_and_when_a_guard_trips(ws: Workspace) -> None:
    ws.declare([session("a"), session("b")])
    assert ws.apply().code == 0
    same = ws.run("apply", str(ws.manifests), "--auto-approve", "--format", "json")
    assert same.code == 0, str(same)
    document = json.loads(same.out)
    assert document["results"] == [] and document["exit_code"] == 0
    assert {a["kind"] for a in document["plan"]["actions"]} == {"noop"}

    ws.declare([session("a", temperature=0.9), session("b", temperature=0.9)])
    before = ws.emulator.calls()["total"]
    refused = ws.run(
        "apply", str(ws.manifests), "--auto-approve", "--format", "json", "--max-stops", "1"
    )
    assert refused.code == 1, str(refused)
    document = json.loads(refused.out)
    assert document["exit_code"] == 1 and document["results"] == []
    assert "more than the budget of 1" in document["plan"]["violations"][0]
    assert refused.err.splitlines()[-1] == (
        "error: the plan was refused by a guard; nothing was changed"
    )
    assert ws.emulator.calls()["total"] == before


# -- 15: on a terminal -----------------------------------------------------------------------


def screen(stream: str) -> list[str]:
    """The lines a terminal shows at the end of `stream`: enough of a VT100 for what rich
    writes (CR, LF, erase line, cursor up; other sequences only set colours or the cursor)."""
    rows = [""]
    row = 0
    for token in re.findall(r"\x1b\[[0-9;?]*[A-Za-z]|\r|\n|[^\x1b\r\n]+", stream):
        if token == "\n":
            row += 1
            if row == len(rows):
                rows.append("")
        elif token == "\r":
            continue  # only whole lines are redrawn here, after an erase
        elif token == "\x1b[2K":
            rows[row] = ""
        elif token == "\x1b[1A":
            row = max(0, row - 1)
        elif not token.startswith("\x1b"):
            rows[row] += token
    return [line for line in rows if line]


def test_on_a_terminal_the_result_lines_stay_above_the_bar(ws: Workspace) -> None:
    import pty

    one_foreign_of_three(ws)
    leader, follower = pty.openpty()
    env = _child_environ(ws.env())
    env.pop("NO_COLOR", None)
    env.update({"TERM": "xterm-256color", "COLUMNS": "400"})
    child = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "apply", str(ws.manifests), "--auto-approve"],
        cwd=ws.root,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=follower,
    )
    os.close(follower)
    chunks: list[bytes] = []
    try:
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert child.stdout is not None
        out = child.stdout.read().decode()
        child.wait(timeout=60)
    finally:
        os.close(leader)
        if child.poll() is None:
            child.kill()
            child.wait()
    stream = b"".join(chunks).decode()
    assert child.returncode == 3, stream
    shown = screen(stream)
    # On a terminal each line prints as its session finishes, in whatever order that is.
    ordered = sorted(shown, key=lambda line: line.split()[2])
    assert ordered[0] == "  ✓ create a: started" and ordered[2] == "  ✓ create c: started"
    assert ordered[1].startswith("  ✗ create b: start failed: HTTP 400 ")
    assert len(shown) == 3, shown  # the bar is gone, the results are not
    assert "\x1b[32m✓" in stream and "\x1b[31m✗" in stream
    assert "applying" in stream  # there was a bar
    assert out.endswith("Apply: 2 succeeded, 1 failed.\n")  # failures only counted here
