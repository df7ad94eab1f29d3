"""The masked spec of a JSON plan and the literal-secret scan of a saved plan follow the
sensitive paths only (normalize.marked_along / sensitive_leaves, issue #9); they must find
what a walk of every node finds (the definitions below, as both were written before).
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from test_redacted_text import KEYS, SENSITIVE, VALUES

from reconciler.core.normalize import SensitivePaths, sensitive_leaves, sensitive_trie
from reconciler.core.render import MASK, masked_spec
from reconciler.core.secrets import escape_token, is_reference


def _masked_by_walk(node: Any, paths: SensitivePaths, path: tuple[str, ...], flag: bool) -> Any:
    if isinstance(node, dict):
        return {
            k: _masked_by_walk(v, paths, (*path, k), (*path, k) in paths) for k, v in node.items()
        }
    if isinstance(node, list):
        inner = flag or (*path, "*") in paths
        return [_masked_by_walk(v, paths, (*path, "*"), inner) for v in node]
    if flag and node is not None and not is_reference(node):
        return MASK
    return node


def _literals_by_walk(
    node: Any, paths: SensitivePaths, path: tuple[str, ...], pointer: str, flag: bool
) -> list[str]:
    if isinstance(node, dict):
        return [
            found
            for key, value in node.items()
            for found in _literals_by_walk(
                value, paths, (*path, key), f"{pointer}/{escape_token(key)}", (*path, key) in paths
            )
        ]
    if isinstance(node, list):
        inner = flag or (*path, "*") in paths
        return [
            found
            for index, value in enumerate(node)
            for found in _literals_by_walk(value, paths, (*path, "*"), f"{pointer}/{index}", inner)
        ]
    return [pointer] if flag and node is not None and not is_reference(node) else []


@settings(max_examples=1500, deadline=None)
@given(st.dictionaries(KEYS, VALUES, max_size=6))
def test_the_masked_spec_is_the_whole_walks(spec: dict[str, Any]) -> None:
    before = repr(spec)
    assert masked_spec(spec, SENSITIVE) == _masked_by_walk(spec, SENSITIVE, (), False)
    assert repr(spec) == before  # copied along the paths, never changed in place


@settings(max_examples=1500, deadline=None)
@given(st.dictionaries(KEYS, VALUES, max_size=6))
def test_the_literal_pointers_are_the_whole_walks(spec: dict[str, Any]) -> None:
    found = [
        pointer
        for pointer, value in sensitive_leaves(spec, sensitive_trie(SENSITIVE))
        if not is_reference(value)
    ]
    assert sorted(found) == sorted(_literals_by_walk(spec, SENSITIVE, (), "", False))


def test_a_subtree_without_a_sensitive_field_is_not_copied() -> None:
    shared = {"Url": "https://llm.example.com", "Words": ["a"]}
    spec = {"a": {"token": "literal", "plain": shared}, "other": shared}
    masked = masked_spec(spec, SENSITIVE)
    assert masked == {"a": {"token": MASK, "plain": shared}, "other": shared}
    assert masked["other"] is shared and masked["a"]["plain"] is shared
    assert masked_spec(shared, SENSITIVE) is shared
