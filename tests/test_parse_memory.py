"""A parsed file holds each distinct string once (core/load.py, issue #9's memory target).

The parsers make a new string object for every value; the sessions of a file repeat most of
theirs, so the depth walk makes equal strings one object. Nothing else may change.
"""

from __future__ import annotations

import json
from collections.abc import Callable

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


def _json() -> str:
    return json.dumps({"sessions": SESSIONS})


def _toml() -> str:
    return "".join(
        f'[[sessions]]\nname = "s{i}"\n[sessions.spec]\n'
        'Url = "https://llm.example.com/v1"\nWords = ["stop", "wait"]\n'
        for i in range(3)
    )


def _yaml() -> str:
    return "sessions:\n" + "".join(
        f"  - name: s{i}\n    spec:\n      Url: https://llm.example.com/v1\n"
        "      Words: [stop, wait]\n"
        for i in range(3)
    )


@pytest.mark.parametrize(
    ("path", "text"), [("a.json", _json), ("a.toml", _toml), ("a.yaml", _yaml)]
)
def test_equal_strings_of_a_file_are_one_object(path: str, text: Callable[[], str]) -> None:
    document = parse_document(path, text().encode())
    assert document.data == {"sessions": SESSIONS}
    _strings_are_shared(document.data)


def test_the_walk_still_refuses_a_number_no_field_can_hold() -> None:
    data = json.dumps({"sessions": [{"name": "x", "spec": {"IdleTimeout": 2**64}}]}).encode()
    with pytest.raises(ValidationFailed) as failed:
        parse_document("a.json", data)
    assert failed.value.problems[0].pointer == "/sessions/0/spec/IdleTimeout"
