"""Issue #11 items 1 and 13: empty secrets are refused like missing ones, and malformed
references are validation errors that name the file, line and field.

Real parts only: `python -m reconciler` subprocesses, the emulator on 127.0.0.1, a SQLite state.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from apply_helpers import SECRET_ENV, Workspace, session

LLM = "/spec/Config/LLMConfig/APIKey"


def total_calls(ws: Workspace) -> int:
    return int(ws.emulator.calls()["total"])


def env_with(ws: Workspace, **variables: str) -> dict[str, str]:
    """The workspace's environment with some variables set (or emptied) as a CI job would."""
    return {**ws.env(), **variables}


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# -- item 1: an empty secret is refused before any call ----------------------------------------


@pytest.mark.parametrize("blank", ["", "   ", "\t\n"])
def test_apply_refuses_an_empty_variable_naming_every_field_that_uses_it(
    ws: Workspace, blank: str
) -> None:
    path = ws.declare([session("a"), session("b")])
    first = ws.apply(here=False)
    assert first.code == 0, str(first)
    calls, serial = total_calls(ws), ws.serial()
    ws.declare([session("a", temperature=0.6), session("b", temperature=0.6)])

    result = ws.run(
        "apply", str(ws.manifests), "--auto-approve", env=env_with(ws, TEST_LLM_API_KEY=blank)
    )

    assert result.code == 1, str(result)
    why = "is empty" if blank == "" else "is only whitespace"
    assert result.err.splitlines() == [
        "error: cannot resolve secret references, so nothing was done:",
        f"  {path}: /sessions/0{LLM}: ${{env:TEST_LLM_API_KEY}}: "
        f"environment variable TEST_LLM_API_KEY {why}",
        f"  {path}: /sessions/1{LLM}: ${{env:TEST_LLM_API_KEY}}: "
        f"environment variable TEST_LLM_API_KEY {why}",
    ]
    assert "Traceback" not in result.err
    assert total_calls(ws) == calls  # not one call: no restart with a blank key
    assert ws.serial() == serial


def test_an_empty_secret_file_is_refused_and_a_reference_in_defaults_is_named_once(
    ws: Workspace,
) -> None:
    write(ws.root / "llm.key", "\n")
    entries = []
    for name in ("a", "b", "c"):
        entry = session(name)
        del entry["spec"]["Config"]["LLMConfig"]["APIKey"]
        entries.append(entry)
    manifest: dict[str, Any] = {
        "defaults": {"spec": {"Config": {"LLMConfig": {"APIKey": "${file:llm.key}"}}}},
        "sessions": entries,
    }
    # YAML keeps lines: the message gives the line of the defaults field.
    text = "defaults:\n  spec:\n    Config:\n      LLMConfig:\n        APIKey: ${file:llm.key}\n"
    text += "sessions: " + json.dumps(manifest["sessions"]) + "\n"
    path = write(ws.manifests / "sessions.yaml", text)

    result = ws.run("apply", str(ws.manifests), "--auto-approve")

    assert result.code == 1, str(result)
    assert result.err.splitlines() == [
        "error: cannot resolve secret references, so nothing was done:",
        f"  {path}:5: /defaults{LLM}: ${{file:llm.key}}: file llm.key is empty",
    ]
    assert total_calls(ws) == 0
    assert not ws.state.exists() or ws.records() == []


def test_a_missing_variable_names_the_file_and_field(ws: Workspace) -> None:
    path = ws.declare([session("a", llm_key="${env:NOT_SET_ANYWHERE}")])

    result = ws.run("apply", str(ws.manifests), "--auto-approve")

    assert result.code == 1, str(result)
    assert result.err.splitlines()[1:] == [
        f"  {path}: /sessions/0{LLM}: ${{env:NOT_SET_ANYWHERE}}: "
        "environment variable NOT_SET_ANYWHERE is not set"
    ]
    assert total_calls(ws) == 0


def test_plan_compares_an_empty_secret_by_name_and_says_it_was_empty(ws: Workspace) -> None:
    ws.declare([session("a")])
    assert ws.apply(here=False).code == 0

    result = ws.run(
        "plan", str(ws.manifests), "--detailed-exitcode", env=env_with(ws, TEST_LLM_API_KEY="")
    )

    # Compared by name: the empty value is not a change that would restart the session...
    assert result.code == 0, str(result)
    assert "sensitive value changed" not in result.out
    # ...and the reviewer is told the secret was empty here.
    assert (
        "Note: 1 of them resolved to an empty value (${env:TEST_LLM_API_KEY}): apply refuses "
        "an empty secret, so set it before applying" in result.out
    )
    assert SECRET_ENV["TEST_LLM_API_KEY"] not in result.out + result.err


@pytest.mark.parametrize(
    ("literal", "message"),
    [("", '"" should be non-empty'), ("  ", '"  " is blank: it must not be only whitespace')],
)
def test_a_blank_literal_credential_is_a_validation_error(
    ws: Workspace, literal: str, message: str
) -> None:
    path = ws.declare([session("a", llm_key=literal)])

    result = ws.run("validate", str(ws.manifests))

    assert result.code == 1, str(result)
    assert result.err.splitlines() == [f"{path}: /sessions/0{LLM}: {message}", "1 problem found."]


# -- item 13: malformed references -------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("$MY_KEY", 'invalid secret reference "$MY_KEY": did you mean ${env:MY_KEY}?'),
        ("$env:MY_KEY", 'invalid secret reference "$env:MY_KEY": did you mean ${env:MY_KEY}?'),
        ("${MY_KEY}", 'invalid secret reference "${MY_KEY}": did you mean ${env:MY_KEY}?'),
        (
            "prefix-${env:KEY}",
            'invalid secret reference "prefix-${env:KEY}": a secret reference must be the '
            "whole value (expected ${env:NAME} or ${file:PATH})",
        ),
        (
            "${env:A}${env:B}",
            'invalid secret reference "${env:A}${env:B}": a secret reference must be the '
            "whole value (expected ${env:NAME} or ${file:PATH})",
        ),
        (
            " ${env:KEY}",
            'invalid secret reference " ${env:KEY}": a secret reference must be the whole '
            "value (remove the spaces)",
        ),
        (
            "${env:MY KEY}",
            'invalid secret reference "${env:MY KEY}": "MY KEY" is not an environment variable '
            "name (letters, digits and _, not starting with a digit)",
        ),
        (
            "${env:1KEY}",
            'invalid secret reference "${env:1KEY}": "1KEY" is not an environment variable '
            "name (letters, digits and _, not starting with a digit)",
        ),
    ],
)
def test_a_malformed_reference_is_reported_at_its_field(
    ws: Workspace, value: str, message: str
) -> None:
    entry = session("a")
    entry["spec"]["AgentConfig"]["WelcomeMessage"] = value
    path = ws.declare([entry])

    result = ws.run("validate", str(ws.manifests))

    assert result.code == 1, str(result)
    assert result.err.splitlines() == [
        f"{path}: /sessions/0/spec/AgentConfig/WelcomeMessage: {message}",
        "1 problem found.",
    ]


def test_a_shell_variable_in_a_credential_is_reported_without_quoting_it(ws: Workspace) -> None:
    path = ws.declare([session("a", llm_key="$ecretPassw0rd")])

    result = ws.run("validate", str(ws.manifests))

    assert result.code == 1, str(result)
    assert result.err.splitlines() == [
        f"{path}: /sessions/0{LLM}: invalid secret reference: a $NAME variable is not expanded "
        "(use ${env:NAME})",
        "1 problem found.",
    ]
    assert "ecretPassw0rd" not in result.err


@pytest.mark.parametrize(
    "text", ["Tickets cost $5.", "Say $ and €.", "$", "a ${ brace", "USD$", "$5", "costs $5 today"]
)
def test_ordinary_text_with_a_dollar_is_not_a_reference(ws: Workspace, text: str) -> None:
    entry = session("a")
    entry["spec"]["AgentConfig"]["WelcomeMessage"] = text
    ws.declare([entry])

    result = ws.run("validate", str(ws.manifests))

    assert result.code == 0, str(result)
    assert result.err == ""


def test_a_schema_error_in_a_credential_does_not_quote_its_value(ws: Workspace) -> None:
    entry = session("a")
    entry["spec"]["Config"]["LLMConfig"]["APIKey"] = 4815162342
    path = ws.declare([entry])

    result = ws.run("validate", str(ws.manifests))

    assert result.code == 1, str(result)
    assert result.err.splitlines() == [
        f'{path}: /sessions/0{LLM}: the sensitive value is not of type "string"',
        "1 problem found.",
    ]
