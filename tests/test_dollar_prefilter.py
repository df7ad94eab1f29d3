"""The reference scan is skipped for a file none of whose strings can hold a `$` (issue #9).

A `$` can be written escaped: the prefilter must see those spellings too, or a reference written
`\\u0024{env:X}` would be sent to the cloud as the literal text instead of its secret.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from reconciler.core.load import may_hold_dollar, parse_document
from reconciler.errors import ValidationFailed
from reconciler.workspace import load_desired

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "support.json"


def _manifest_without_references() -> dict[str, object]:
    manifest = json.loads(EXAMPLE.read_text("utf-8"))
    del manifest["$schema"]
    text = re.sub(r"\$\{env:[A-Z_]+\}", "plain-value", json.dumps(manifest))
    assert "$" not in text
    return dict(json.loads(text))


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b'{"a": "plain"}', False),
        (b'{"a": "${env:X}"}', True),
        (b'{"a": "\\u0024{env:X}"}', True),  # JSON, TOML
        (b'a: "\\x24{env:X}"', True),  # YAML
        (b'a = "\\U00000024{env:X}"', True),  # TOML, YAML
        (b'{"a": "costs 5 \\u20ac"}', False),
    ],
)
def test_every_spelling_of_a_dollar_is_seen(data: bytes, expected: bool) -> None:
    assert may_hold_dollar(data) is expected


def test_a_file_without_a_dollar_declares_no_references(tmp_path: Path) -> None:
    path = tmp_path / "plain.json"
    path.write_text(json.dumps(_manifest_without_references()), encoding="utf-8")
    assert parse_document(str(path), path.read_bytes()).holds_dollar is False
    sessions = load_desired([str(path)])
    assert sessions and all(not session.references for session in sessions)


def test_an_escaped_reference_is_still_a_reference(tmp_path: Path) -> None:
    manifest = json.loads(EXAMPLE.read_text("utf-8"))
    text = json.dumps(manifest, ensure_ascii=True).replace("$", "\\u0024")
    path = tmp_path / "escaped.json"
    path.write_text(text, encoding="utf-8")
    assert b"$" not in path.read_bytes()
    sessions = load_desired([str(path)])
    assert "${env:VOICE_LLM_API_KEY}" in sessions[0].references


def test_an_escaped_mistaken_reference_is_still_refused(tmp_path: Path) -> None:
    manifest = _manifest_without_references()
    manifest["sessions"][0]["spec"]["RoomId"] = "\x24{vault:room}"  # type: ignore[index]
    text = json.dumps(manifest, ensure_ascii=True).replace("$", "\\u0024")
    path = tmp_path / "typo.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValidationFailed) as failed:
        load_desired([str(path)])
    assert any("invalid secret reference" in p.message for p in failed.value.problems)
