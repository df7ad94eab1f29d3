"""`Redactor.text` (issue #9) is `canonical_json(Redactor.redact(spec))`, byte for byte.

The plan compares a session with its record by the fingerprint of that text, and records written
by earlier versions hold texts made by `canonical_json`: any difference, even of one escape,
would turn every running session into a change. The text is encoded with the sensitive literals
marked in a copy and the references marked in the text afterwards, so the property is checked
on generated specs that share subtrees, hold references (also inside other strings, after
escaped quotes and as keys), sensitive paths through objects and lists, and every kind of leaf.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core.normalize import Redactor, canonical_json

KEYS = st.sampled_from(
    ["a", "B", "token", "AccessToken", "é", "x/y", "~", "", "\u2028", 'z"q', "*", "${env:TOKEN}"]
)
LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(
        [
            "${env:TOKEN}",
            "${file:/run/key}",
            '${file:/run/"quoted\\dir}',
            "${env:MISSING}",
            "${vault:x}",
            "${env:TOKEN",
            "$5",
            'a"${env:TOKEN}',
            '\\"${env:TOKEN}',
            "\\",
            '${env:TOKEN}"',
        ]
    ),
)
VALUES = st.recursive(
    LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=5),
    max_leaves=25,
)
SENSITIVE = frozenset(
    {
        ("token",),
        ("a", "token"),
        ("B", "*"),
        ("AccessToken",),
        ("a", "*", "AccessToken"),
        ("é",),
        ("*",),
        ("a", "*", "*"),
        ("B",),
    }
)
SECRETS = {"${env:TOKEN}": "s3cr3t", "${file:/run/key}": "k3y", '${file:/run/"quoted\\dir}': "q"}


def _specs_sharing(shared: Any, own: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Specs that hold the very same subtree objects, as file defaults give them."""
    return [{**spec, "a": shared, "B": [shared, spec.get("B")]} for spec in own]


@settings(max_examples=1500, deadline=None)
@given(st.dictionaries(KEYS, VALUES, max_size=6))
def test_text_is_the_canonical_json_of_the_redacted_spec(spec: dict[str, Any]) -> None:
    redactor = Redactor(SENSITIVE, b"key", SECRETS)
    assert redactor.text(spec) == canonical_json(redactor.redact(spec))


@settings(max_examples=150, deadline=None)
@given(VALUES, st.lists(st.dictionaries(KEYS, VALUES, max_size=4), min_size=1, max_size=4))
def test_shared_subtrees_give_the_same_text_in_every_spec(
    shared: Any, own: list[dict[str, Any]]
) -> None:
    redactor = Redactor(SENSITIVE, b"key", SECRETS)
    fresh = Redactor(SENSITIVE, b"key", SECRETS)
    for spec in _specs_sharing(shared, own):
        # One redactor over all specs (its memo warm) against the tree made by another.
        assert redactor.text(spec) == canonical_json(fresh.redact(spec))


def test_a_sensitive_leaf_shows_only_its_marker() -> None:
    redactor = Redactor(SENSITIVE, b"key", SECRETS)
    text = redactor.text({"token": "plain-secret", "a": {"token": 7}, "B": ["x", "${env:TOKEN}"]})
    assert "plain-secret" not in text and "s3cr3t" not in text
    assert text.count("<sensitive hmac:") == 3  # the literal, the number, the list item
    assert "<sensitive ${env:TOKEN} hmac:" in text
