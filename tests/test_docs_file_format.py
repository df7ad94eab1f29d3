"""docs/file-format.md says what the code does about Alibaba Cloud sessions: its example is a
valid manifest, its in-place table is exactly the provider's in-place fields, and the limits
and messages it quotes are the ones the rules and the schema produce."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from reconciler.cli import main
from reconciler.providers.registry import PROVIDERS

REPO = Path(__file__).resolve().parents[1]
DOC = (REPO / "docs" / "file-format.md").read_text("utf-8")
SECTION = DOC[DOC.index("## Alibaba Cloud sessions") : DOC.index("## Defaults")]


def test_the_example_is_a_valid_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (block,) = re.findall(r"```json\n(.*?)```", SECTION, flags=re.DOTALL)
    manifest = tmp_path / "example.json"
    manifest.write_text(json.dumps({"sessions": [json.loads(block)]}), "utf-8")
    assert main(["validate", str(manifest)]) == 0, capsys.readouterr().err


def test_the_in_place_table_is_the_providers_in_place_fields() -> None:
    table = SECTION[SECTION.index("| field | effect |") : SECTION.index("A change only under")]
    listed = {"/" + name.replace(".", "/") for name in re.findall(r"`([A-Za-z.]+)`", table)}
    assert listed == set(PROVIDERS["aliyun"].rules.in_place_prefixes)


def test_the_quoted_limits_and_messages_are_the_codes() -> None:
    for name, spec in PROVIDERS.items():
        assert spec.rules.max_announcement_chars is not None
        assert f"{name} {spec.rules.max_announcement_chars}" in DOC
    assert "up to **1024 characters**" in SECTION
    schema = (REPO / "schemas" / "aliyun.schema.json").read_text("utf-8")
    assert "AuthToken is made by the reconciler at Start from the ARTC app ID and app key" in schema
    assert 'the UserData key \\"reconciler\\" is reserved' in schema
    rules = PROVIDERS["aliyun"].rules
    assert f"duplicate {rules.noun} {rules.identity_label} ..." in DOC
