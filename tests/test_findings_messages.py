"""Issue #11 items 7, 14a and 17: what plan and validate say, in the user's words.

- 7: an announcement added in the change that restarts a session is listed as not played, and
  apply does what the plan says (records it delivered, no UpdateVoiceChat call).
- 14a: numbers past 64 bits, or past Python's 4,300-digit limit, are one-line errors naming
  file, line where known, and pointer, in JSON, TOML and YAML alike.
- 17: values quoted in JSON spelling, no regex internals, duplicate keys at their object's
  pointer with a line, a literal secret in `defaults` reported once at `/defaults/...`.

Real parts only: `python -m reconciler` subprocesses, the emulator on 127.0.0.1, a SQLite state.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from apply_helpers import Workspace, session


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


MAINT = {"id": "maint-1121", "message": "We will restart for maintenance at 22:00."}
NOT_PLAYED = "> not played: maint-1121 (the restart starts a new conversation)"


# -- item 7: an announcement added with a restart ----------------------------------------------


def test_an_announcement_added_with_a_restart_is_listed_as_not_played_and_apply_agrees(
    ws: Workspace,
) -> None:
    ws.declare([session("a")])
    assert ws.apply(here=False).code == 0
    ws.declare([session("a", temperature=0.7, announcements=[MAINT])])

    text = ws.run("plan", str(ws.manifests))
    as_json = ws.run("plan", str(ws.manifests), "--format", "json")
    markdown = ws.run("plan", str(ws.manifests), "--format", "markdown")

    assert text.code == 0, str(text)
    lines = text.out.splitlines()
    replace_at = lines.index(next(line for line in lines if "-/+ replace a" in line))
    assert f"      {NOT_PLAYED}" in lines[replace_at:]
    assert "> announce maint-1121" not in text.out
    action = json.loads(as_json.out)["actions"][0]
    assert action["kind"] == "replace"
    assert action["announcements"] == []
    assert action["not_played"] == [{**MAINT, "interrupt_mode": 2}]
    assert f"  {NOT_PLAYED}" in markdown.out

    before = ws.emulator.calls()["by_action"]
    result = ws.run("apply", str(ws.manifests), "--auto-approve")

    assert result.code == 0, str(result)
    assert NOT_PLAYED in result.out  # the plan apply prints says the same
    after = ws.emulator.calls()["by_action"]
    assert after.get("UpdateVoiceChat", 0) == before.get("UpdateVoiceChat", 0)
    assert after.get("StartVoiceChat", 0) == before.get("StartVoiceChat", 0) + 1
    assert ws.records()[0]["announcements_delivered"] == ["maint-1121"]
    again = ws.run("plan", str(ws.manifests), "--detailed-exitcode")
    assert again.code == 0, str(again)
    assert "No changes." in again.out


def savable(entry: dict[str, Any]) -> dict[str, Any]:
    """The session without its literal secret: a saved plan refuses to hold one."""
    del entry["spec"]["Config"]["SubtitleConfig"]["ServerMessageSignature"]
    return entry


def test_a_saved_plan_keeps_its_not_played_announcements(ws: Workspace) -> None:
    ws.declare([savable(session("a"))])
    assert ws.apply(here=False).code == 0
    ws.declare([savable(session("a", temperature=0.7, announcements=[MAINT]))])
    saved = ws.root / "plan.json"
    assert ws.run("plan", str(ws.manifests), "--out", str(saved)).code == 0

    result = ws.run("apply", str(saved), "--auto-approve")

    assert result.code == 0, str(result)
    assert NOT_PLAYED in result.out  # the reviewed plan, as it was reviewed
    assert ws.records()[0]["announcements_delivered"] == ["maint-1121"]


def test_an_announcement_added_alone_is_still_played(ws: Workspace) -> None:
    ws.declare([session("a")])
    assert ws.apply(here=False).code == 0
    ws.declare([session("a", announcements=[MAINT])])

    result = ws.run("apply", str(ws.manifests), "--auto-approve")

    assert result.code == 0, str(result)
    assert "not played" not in result.out
    assert "> announce maint-1121" in result.out
    assert ws.emulator.calls()["by_action"].get("UpdateVoiceChat", 0) == 1


# -- item 14a: numbers no field can hold --------------------------------------------------------

RANGE = "integers must be 64-bit (-9223372036854775808 to 9223372036854775807)"
IDLE = "/sessions/0/spec/AgentConfig/IdleTimeout"


def idle_timeout_manifest(suffix: str, number: str) -> str:
    """One session whose IdleTimeout is `number` (as written), in the given format."""
    entry = session("a")
    entry["spec"]["AgentConfig"]["IdleTimeout"] = "NUMBER"
    if suffix == ".json":
        return json.dumps({"sessions": [entry]}, indent=1).replace('"NUMBER"', number)
    if suffix == ".yaml":
        return json.dumps({"sessions": [entry]}, indent=1).replace('"NUMBER"', number)
    lines = "".join(f"{key} = {inline_toml(value)}\n" for key, value in entry.items())
    return "[[sessions]]\n" + lines.replace('"NUMBER"', number)


def inline_toml(value: object) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f'"{k}" = {inline_toml(v)}' for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(inline_toml(item) for item in value) + "]"
    return json.dumps(value)


@pytest.mark.parametrize("suffix", [".json", ".toml", ".yaml"])
@pytest.mark.parametrize(
    ("number", "problem"),
    [
        ("9" * 401, f"a 401-digit integer is out of range: {RANGE}"),
        ("9" * 5000, f"a 5,000-digit integer is out of range: {RANGE}"),
        ("9223372036854775808", f"9223372036854775808 is out of range: {RANGE}"),
        ("-9223372036854775809", f"-9223372036854775809 is out of range: {RANGE}"),
    ],
)
def test_an_integer_past_64_bits_is_one_line_naming_file_line_and_pointer(
    ws: Workspace, suffix: str, number: str, problem: str
) -> None:
    text = idle_timeout_manifest(suffix, number)
    path = write(ws.manifests / f"sessions{suffix}", text)
    line = 1 + text[: text.index(number)].count("\n")

    result = ws.run("apply", str(ws.manifests), "--auto-approve")

    assert result.code == 1, str(result)
    pointer = IDLE if suffix != ".toml" else "/sessions/0/spec/AgentConfig/IdleTimeout"
    assert result.err.splitlines() == [f"{path}:{line}: {pointer}: {problem}", "1 problem found."]
    assert "Traceback" not in result.err
    assert ws.emulator.calls()["total"] == 0
    assert not ws.state.exists() or ws.records() == []


def test_the_largest_64_bit_integer_is_accepted(ws: Workspace) -> None:
    write(ws.manifests / "sessions.json", idle_timeout_manifest(".json", str(2**63 - 1)))

    result = ws.run("validate", str(ws.manifests))

    assert result.code == 0, str(result)


@pytest.mark.parametrize(
    ("suffix", "written", "shown"),
    [
        (".json", "1e400", "a number beyond ±1.8e308 (a 64-bit float)"),
        (".json", "NaN", "NaN"),
        (".json", "-Infinity", "-Infinity"),
        (".yaml", ".inf", ".inf"),
        (".yaml", ".NaN", ".NaN"),
    ],
)
def test_a_number_that_is_not_finite_is_refused(
    ws: Workspace, suffix: str, written: str, shown: str
) -> None:
    path = write(ws.manifests / f"s{suffix}", idle_timeout_manifest(suffix, written))

    result = ws.run("validate", str(ws.manifests))

    assert result.code == 1, str(result)
    constant = written in ("NaN", "-Infinity")
    allowed = "is not a number JSON allows" if constant else "is not a finite number"
    first = result.err.splitlines()[0]
    assert first.startswith(f"{path}:") and first.endswith(f": {IDLE}: {shown} {allowed}"), first


# -- item 17: messages in the user's language --------------------------------------------------


def test_values_are_spelled_as_json_and_patterns_without_regex_guards(ws: Workspace) -> None:
    entry = session("a")
    entry["spec"]["Config"]["InterruptMode"] = None
    entry["spec"]["AgentConfig"]["EnableConversationStateCallback"] = "false"
    entry["spec"]["AgentConfig"]["TargetUserId"] = ["a", "b"]
    entry["spec"]["RoomId"] = "room 1!"
    entry["protect"] = None
    path = ws.declare([entry])

    result = ws.run("validate", str(ws.manifests))

    assert result.code == 1, str(result)
    assert result.err.splitlines() == [
        f'{path}: /sessions/0/protect: null is not of type "boolean"',
        f"{path}: /sessions/0/spec/AgentConfig/EnableConversationStateCallback: "
        '"false" is not of type "boolean"',
        f'{path}: /sessions/0/spec/AgentConfig/TargetUserId: ["a", "b"] is too long '
        "(at most 1 item)",
        f'{path}: /sessions/0/spec/Config/InterruptMode: null is not of type "integer"',
        f"{path}: /sessions/0/spec/Config/InterruptMode: null is not one of [0, 1]",
        f'{path}: /sessions/0/spec/RoomId: "room 1!" does not match the pattern '
        "^[A-Za-z0-9@._-]{1,128}$",
        "6 problems found.",
    ]
    for python in ("None", "False", "['a', 'b']", "(?!", "[\\s\\S]"):
        assert python not in result.err


@pytest.mark.parametrize(
    ("name", "text", "where"),
    [
        (
            "s.json",
            '{"sessions": [\n {"name": "a",\n  "labels": {"team": "x",\n   "team": "y"}}]}\n',
            ":4: /sessions/0/labels",
        ),
        ("s.json", '{"sessions": [],\n "sessions": []}\n', ":2: /"),
        (
            "s.yaml",
            "sessions:\n- name: a\n  labels:\n    team: x\n    team: y\n",
            ":5: /sessions/0/labels",
        ),
        (
            "s.toml",
            '[[sessions]]\nname = "a"\n[[sessions]]\nname = "b"\n'
            '[sessions.labels]\nteam = "x"\nteam = "y"\n',
            ":7: /sessions/1/labels",
        ),
        (
            "s.toml",
            '[[sessions]]\nname = "a"\nlabels.team = "x"\nlabels.team = "y"\n',
            ":4: /sessions/0/labels",
        ),
    ],
)
def test_a_duplicate_key_is_reported_at_its_object_with_a_line(
    ws: Workspace, name: str, text: str, where: str
) -> None:
    path = write(ws.manifests / name, text)

    result = ws.run("validate", str(ws.manifests))

    assert result.code == 1, str(result)
    key = "sessions" if where.endswith(": /") else "team"
    assert result.err.splitlines() == [f'{path}{where}: duplicate key "{key}"', "1 problem found."]


def test_a_literal_secret_in_defaults_is_reported_once_at_defaults_with_its_line(
    ws: Workspace,
) -> None:
    entries = []
    for name in ("a", "b", "c"):
        entry = session(name)
        del entry["spec"]["Config"]["LLMConfig"]["APIKey"]
        del entry["spec"]["Config"]["SubtitleConfig"]
        entries.append(entry)
    text = (
        "defaults:\n  spec:\n    Config:\n      LLMConfig:\n        APIKey: sk-literal-123\n"
        "sessions: " + json.dumps(entries) + "\n"
    )
    path = write(ws.manifests / "sessions.yaml", text)

    result = ws.run("plan", str(ws.manifests), "--out", str(ws.root / "plan.json"))

    assert result.code == 1, str(result)
    assert result.err.splitlines() == [
        f"{path}:5: /defaults/spec/Config/LLMConfig/APIKey: a saved plan cannot hold a literal "
        "secret: use ${env:NAME} or ${file:PATH}",
        "1 problem found.",
    ]
    assert "sk-literal-123" not in result.out + result.err
    assert not (ws.root / "plan.json").exists()


# -- the position finders behind those messages (pure functions, on the error path only) -------


def test_toml_duplicates_are_placed_by_the_headers_above_them() -> None:
    from reconciler.core.positions import DuplicateKey, toml_duplicate

    text = (
        '[[sessions]]\nname = "a"\n[[sessions.announcements]]\nid = "x"\n'
        '[[sessions]]\nname = "b"\n[[sessions.announcements]]\nid = "y"\n'
        '[[sessions.announcements]]\nid = "z"\n"id" = "again"\n'
        '[sessions.spec."Agent.Config"]\nUserId = "u"\n'
    )
    assert toml_duplicate(text, 11) == DuplicateKey("/sessions/1/announcements/1", "id", 11)
    assert toml_duplicate(text + "UserId = 'v'\n", 14) == DuplicateKey(
        "/sessions/1/spec/Agent.Config", "UserId", 14
    )
    assert toml_duplicate("[a]\nx = 1\n[a]\n", 3) == DuplicateKey("", "a", 3)
    assert toml_duplicate("x = 1\n", 9) is None


def test_json_duplicates_and_lines_follow_the_text() -> None:
    from reconciler.core.positions import DuplicateKey, json_duplicate, json_line

    text = '{"a": [1, {"b~/": {"k": 1,\n "k": 2}}],\n "c": "x"}'
    assert json_duplicate(text) == DuplicateKey("/a/1/b~0~1", "k", 2)
    valid = '{"a": [1, {"b": 2}],\n "c":\n  "x"}'
    assert json_line(valid, "/c") == 3
    assert json_line(valid, "/a/1/b") == 1
    assert json_line(valid, "/missing") is None
    assert json_duplicate('{"a": 1, "b": 2}') is None
    assert json_duplicate('{"a": ') is None  # not JSON past the point: no position


@pytest.mark.parametrize("document", ["5", '"text"', "[1, 2]", "1e400"])
def test_a_document_that_is_not_an_object_is_still_one_clear_line(
    ws: Workspace, document: str
) -> None:
    path = write(ws.manifests / "s.json", document)

    result = ws.run("validate", str(ws.manifests))

    assert result.code == 1, str(result)
    expected = (
        f"{path}:1: /: a number beyond ±1.8e308 (a 64-bit float) is not a finite number"
        if document == "1e400"
        else f'{path}: /: expected an object with a "sessions" list'
    )
    assert result.err.splitlines() == [expected, "1 problem found."]
