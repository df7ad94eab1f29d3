"""A parsed file holds each distinct string once (core/load.py, issue #9's memory target).

The parsers make a new string object for every value; the sessions of a file repeat most of
theirs, so the depth walk makes equal strings one object. Nothing else may change.
"""

from __future__ import annotations

import json

import pytest

from reconciler.core.load import parse_document
from reconciler.errors import ValidationFailed

SESSIONS = [
    {"name": f"s{i}", "spec": {"Url": "https://llm.example.com/v1", "Words": ["stop", "wait"]}}
    for i in range(3)
]


def _strings_are_shared(value: object) -> None:
    first, *others = value["sessions"]  # type: ignore[index]
    for other in others:
        assert other["spec"]["Url"] is first["spec"]["Url"]
        assert other["spec"]["Words"][1] is first["spec"]["Words"][1]
        assert other["name"] != first["name"]


def test_equal_strings_of_a_json_file_are_one_object() -> None:
    data = json.dumps({"sessions": SESSIONS}).encode()
    document = parse_document("a.json", data)
    assert document.data == {"sessions": SESSIONS}
    _strings_are_shared(document.data)


def test_equal_strings_of_a_toml_file_are_one_object() -> None:
    text = "".join(
        f'[[sessions]]\nname = "s{i}"\n[sessions.spec]\n'
        'Url = "https://llm.example.com/v1"\nWords = ["stop", "wait"]\n'
        for i in range(3)
    )
    document = parse_document("a.toml", text.encode())
    assert document.data == {"sessions": SESSIONS}
    _strings_are_shared(document.data)


def test_equal_strings_of_a_yaml_file_are_one_object() -> None:
    text = "sessions:\n" + "".join(
        f"  - name: s{i}\n    spec:\n      Url: https://llm.example.com/v1\n"
        "      Words: [stop, wait]\n"
        for i in range(3)
    )
    document = parse_document("a.yaml", text.encode())
    assert document.data == {"sessions": SESSIONS}
    _strings_are_shared(document.data)


def test_the_walk_still_refuses_a_number_no_field_can_hold() -> None:
    data = json.dumps({"sessions": [{"name": "x", "spec": {"IdleTimeout": 2**64}}]}).encode()
    with pytest.raises(ValidationFailed) as failed:
        parse_document("a.json", data)
    assert failed.value.problems[0].pointer == "/sessions/0/spec/IdleTimeout"
