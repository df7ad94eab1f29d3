"""A lone surrogate escape in a manifest is refused at its field (it crashed the plan).

JSON and YAML write a character past U+FFFF as a pair of `\\u` escapes (`\\ud83d\\ude00`), and
their parsers join the pair. One half alone (`"\\ud800"`) parses to a string that is not text:
the plan then died printing it, with a traceback, in every format. It is refused when the file
is read, with the file, line and pointer, like any other bad value.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from reconciler.cli import main
from reconciler.core import load_yaml
from reconciler.core.load import parse_document
from reconciler.errors import Problem, ValidationFailed

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "support.json"
ALONE = "alone is not a character (half of a surrogate pair)"


def _refused(path: str, text: str) -> Problem:
    with pytest.raises(ValidationFailed) as failed:
        parse_document(path, text.encode())
    (problem,) = failed.value.problems
    return problem


def test_a_json_value_with_half_a_pair_is_refused_at_its_line_and_pointer() -> None:
    text = '{\n  "sessions": [\n    {"name": "a", "spec": {"Greeting": "hi \\ud83d"}}\n  ]\n}\n'
    problem = _refused("a.json", text)
    assert problem.file == "a.json"
    assert problem.pointer == "/sessions/0/spec/Greeting"
    assert problem.line == 3
    assert problem.message.startswith(f"\\ud83d {ALONE}")
    assert problem.message.endswith(
        "escaped as a pair, such as \\ud83d\\ude00, or written as itself"
    )


def test_a_json_key_with_half_a_pair_is_shown_escaped() -> None:
    problem = _refused("a.json", '{"sessions": [], "x\\uDC00y": 1}')
    assert problem.pointer == "/x\\udc00y"  # printable: the pointer itself is not text
    assert problem.message.startswith(f"\\udc00 {ALONE}")


@pytest.mark.parametrize("escape", ["\\ud800", "\\U0000DBFF", "\\ud83d\\ude00"])
def test_a_yaml_string_with_a_surrogate_is_refused_at_its_line(
    escape: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # YAML escapes are characters, so even a pair is two halves. libyaml refuses them itself;
    # PyYAML's own parser, used where libyaml is missing, lets them through to our check.
    text = f'sessions:\n  - name: a\n    spec:\n      Greeting: "hi {escape}"\n'
    if hasattr(yaml, "CSafeLoader"):
        assert "invalid YAML" in _refused("a.yaml", text).message
    monkeypatch.setattr(load_yaml, "_YamlLoader", yaml.SafeLoader)
    problem = _refused("a.yaml", text)
    assert (problem.pointer, problem.line) == ("/sessions/0/spec/Greeting", 4)
    assert ALONE in problem.message
    assert problem.message.endswith("escaped as \\U0001F600, or written as itself")


def test_a_json_pair_and_an_escaped_backslash_are_text() -> None:
    pair = parse_document("a.json", b'{"g": "\\ud83d\\ude00", "h": "\\\\ud800"}')
    assert pair.data == {"g": "\U0001f600", "h": "\\ud800"}
    assert parse_document("a.yaml", b'g: "\\U0001F600"\n').data == {"g": "\U0001f600"}


def test_plan_names_the_field_instead_of_crashing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = json.loads(EXAMPLE.read_text("utf-8"))
    manifest["sessions"][0]["spec"]["AgentConfig"]["WelcomeMessage"] = "hi SURROGATE"
    path = tmp_path / "support.json"
    path.write_text(json.dumps(manifest, indent=2).replace("SURROGATE", "\\ud800"), "utf-8")
    monkeypatch.setenv("RECONCILER_STATE", str(tmp_path / "state.db"))
    for command in (["plan"], ["plan", "--format", "json"], ["validate"]):
        assert main([*command, str(path)]) == 1
        captured = capsys.readouterr()
        assert "/sessions/0/spec/AgentConfig/WelcomeMessage: \\ud800 " + ALONE in captured.err
        assert "Traceback" not in captured.err
    assert not (tmp_path / "state.db").exists()
