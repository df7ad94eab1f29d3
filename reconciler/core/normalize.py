"""Canonical form of a spec: redaction of sensitive values, fingerprints and field diffs.

A redacted spec replaces every sensitive leaf (a field marked `x-sensitive` in the provider
schema, or any secret reference) with a marker that holds a keyed hash of the value, never the
value. The key is kept per state, so two states never share hashes and a hash cannot be matched
against a list of common secrets without the key. Markers:

    <sensitive hmac:1f2e...>                   a literal value
    <sensitive ${env:NAME} hmac:1f2e...>       a reference whose value was resolved
    <sensitive ${env:NAME} hmac:unresolved>    a reference that could not be resolved here

Rotating a secret changes the hash, so the plan shows "sensitive value changed". A plan made
where secrets are not available (a pull-request job) compares references by name instead.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from reconciler.core.secrets import escape_token, is_reference, split_pointer

SensitivePaths = frozenset[tuple[str, ...]]  # "*" stands for any array index
UNRESOLVED = "unresolved"
_MARKER_PREFIX = "<sensitive "


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def fingerprint(redacted: Any) -> str:
    return hashlib.sha256(canonical_json(redacted).encode()).hexdigest()


def sensitive_paths(schema: Mapping[str, Any]) -> SensitivePaths:
    """Every property path the schema marks `x-sensitive` (following $ref, items, allOf/if/then)."""
    definitions = schema.get("definitions", {})
    found: set[tuple[str, ...]] = set()

    def walk(node: Any, path: tuple[str, ...], seen_refs: frozenset[str]) -> None:
        if not isinstance(node, dict):
            return
        if node.get("x-sensitive") is True:
            found.add(path)
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/definitions/") and ref not in seen_refs:
            walk(definitions.get(ref.rsplit("/", 1)[1]), path, seen_refs | {ref})
        for key, child in node.get("properties", {}).items():
            walk(child, (*path, key), seen_refs)
        items = node.get("items")
        if isinstance(items, dict):
            walk(items, (*path, "*"), seen_refs)
        for combinator in ("allOf", "anyOf", "oneOf"):
            for child in node.get(combinator, []):
                walk(child, path, seen_refs)
        for branch in ("then", "else"):
            walk(node.get(branch), path, seen_refs)

    walk(schema, (), frozenset())
    return frozenset(found)


def is_marker(value: object) -> bool:
    return isinstance(value, str) and value.startswith(_MARKER_PREFIX) and value.endswith(">")


def _keyed_hash(key: bytes, value: str) -> str:
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:24]


def marker(value: str, key: bytes, secrets: Mapping[str, str]) -> str:
    if is_reference(value):
        resolved = secrets.get(value)
        digest = _keyed_hash(key, resolved) if resolved is not None else UNRESOLVED
        return f"{_MARKER_PREFIX}{value} hmac:{digest}>"
    return f"{_MARKER_PREFIX}hmac:{_keyed_hash(key, value)}>"


def redact(spec: Any, paths: SensitivePaths, key: bytes, secrets: Mapping[str, str]) -> Any:
    """The spec with every sensitive leaf replaced by its marker (see module docstring)."""

    def walk(node: Any, path: tuple[str, ...], sensitive: bool) -> Any:
        if isinstance(node, dict):
            return {k: walk(v, (*path, k), (*path, k) in paths) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, (*path, "*"), sensitive or (*path, "*") in paths) for v in node]
        if isinstance(node, str) and (sensitive or is_reference(node)):
            return marker(node, key, secrets)
        if sensitive and node is not None:
            return marker(canonical_json(node), key, secrets)
        return node

    return walk(spec, (), False)


def has_unresolved(redacted: Any) -> bool:
    return f" hmac:{UNRESOLVED}>" in canonical_json(redacted)


def adopt_recorded_hashes(desired: Any, recorded: Any) -> Any:
    """Where the desired spec holds an unresolved reference that the record holds too (same
    reference, resolved when it was applied), take the record's marker: without the secret we
    cannot tell a rotation, and the reference itself did not change."""
    if isinstance(desired, dict) and isinstance(recorded, dict):
        return {k: adopt_recorded_hashes(v, recorded.get(k)) for k, v in desired.items()}
    if isinstance(desired, list) and isinstance(recorded, list):
        return [
            adopt_recorded_hashes(v, recorded[i] if i < len(recorded) else None)
            for i, v in enumerate(desired)
        ]
    if (
        isinstance(desired, str)
        and desired.endswith(f" hmac:{UNRESOLVED}>")
        and isinstance(recorded, str)
        and is_marker(recorded)
        and recorded.rsplit(" hmac:", 1)[0] == desired.rsplit(" hmac:", 1)[0]
    ):
        return recorded
    return desired


def changed_paths(old: Any, new: Any, pointer: str = "") -> list[str]:
    """JSON pointers of the leaves that differ; a list whose length changed counts as one path."""
    if isinstance(old, dict) and isinstance(new, dict):
        paths: list[str] = []
        for key in sorted(old.keys() | new.keys()):
            child = f"{pointer}/{escape_token(key)}"
            if key not in old or key not in new:
                paths.append(child)
            else:
                paths.extend(changed_paths(old[key], new[key], child))
        return paths
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        paths = []
        for index, (a, b) in enumerate(zip(old, new, strict=True)):
            paths.extend(changed_paths(a, b, f"{pointer}/{index}"))
        return paths
    if old == new and type(old) is type(new):
        return []
    return [pointer or "/"]


def value_at(document: Any, pointer: str) -> Any:
    node = document
    for token in split_pointer(pointer):
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            return None
    return node
