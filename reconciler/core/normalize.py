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
import re
from collections.abc import Mapping, Set
from json.encoder import encode_basestring
from typing import Any

from reconciler.core.secrets import escape_token, is_reference, lookup

SensitivePaths = frozenset[tuple[str, ...]]  # "*" stands for any array index
UNRESOLVED = "unresolved"
_MARKER_PREFIX = "<sensitive "


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def fingerprint(redacted: Any) -> str:
    return text_fingerprint(canonical_json(redacted))


def text_fingerprint(canonical: str) -> str:
    return hashlib.sha256(canonical.encode()).hexdigest()


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


class Redactor:
    """Redacts many specs with one key and one set of resolved secrets.

    Each secret's keyed hash is computed once, and a subtree shared by many specs (what file
    `defaults` leave unchanged under each session is the same object) is redacted once: a plan
    over thousands of sessions walks each distinct subtree a single time.
    """

    def __init__(self, paths: SensitivePaths, key: bytes, secrets: Mapping[str, str]) -> None:
        self.paths = paths
        self.key = key
        self.digests = {reference: _keyed_hash(key, value) for reference, value in secrets.items()}
        self._literals: dict[str, str] = {}
        self._memo: dict[tuple[int, tuple[str, ...], bool], Any] = {}
        self._texts: dict[tuple[int, tuple[str, ...], bool], str] = {}
        self._seen: dict[tuple[tuple[str, ...], bool], dict[int, None]] = {}
        # The memo is keyed by id(): keep every memoised node alive so no id is reused.
        self._kept: list[Any] = []
        # For each object path, which of its keys are sensitive: no tuple is built per leaf.
        self._sensitive_keys: dict[tuple[str, ...], frozenset[str]] = {}
        for sensitive_path in paths:
            parent, last = sensitive_path[:-1], sensitive_path[-1]
            self._sensitive_keys[parent] = self._sensitive_keys.get(parent, frozenset()) | {last}

    def marker(self, value: str) -> str:
        if is_reference(value):
            return f"{_MARKER_PREFIX}{value} hmac:{self.digests.get(value, UNRESOLVED)}>"
        digest = self._literals.get(value)
        if digest is None:
            digest = self._literals[value] = _keyed_hash(self.key, value)
        return f"{_MARKER_PREFIX}hmac:{digest}>"

    def redact(self, spec: Any) -> Any:
        """The spec with every sensitive leaf replaced by its marker (see module docstring)."""
        return self._walk(spec, (), False)

    def _walk(self, node: Any, path: tuple[str, ...], sensitive: bool) -> Any:
        if isinstance(node, dict | list):
            memo_key = (id(node), path, sensitive)
            cached = self._memo.get(memo_key, _MISSING)
            if cached is not _MISSING:
                return cached
            if isinstance(node, dict):
                marked = self._sensitive_keys.get(path, frozenset())
                result: Any = {}
                for key, value in node.items():
                    if isinstance(value, str) and key not in marked and not value.startswith("${"):
                        result[key] = value  # the common case, without a call
                    else:
                        result[key] = self._walk(value, (*path, key), key in marked)
            else:
                child = (*path, "*")
                inner = sensitive or child in self.paths
                result = [self._walk(value, child, inner) for value in node]
            self._memo[memo_key] = result
            self._kept.append(node)
            return result
        if isinstance(node, str):
            if sensitive or (node.startswith("${") and is_reference(node)):
                return self.marker(node)
            return node
        if sensitive and node is not None:
            return self.marker(canonical_json(node))
        return node

    def text(self, spec: Any) -> str:
        """`canonical_json(self.redact(spec))`, built without the redacted tree: the canonical
        text of an object is its sorted members' texts joined, so a subtree shared by many
        specs is redacted and encoded once, and each spec pays only for what is its own."""
        return self._text(spec, (), False)

    def _text(self, node: Any, path: tuple[str, ...], sensitive: bool) -> str:
        kind = type(node)
        if kind is str:
            if sensitive or (node.startswith("${") and is_reference(node)):
                return encode_basestring(self.marker(node))
            return encode_basestring(node)
        if kind is not dict and kind is not list:
            if sensitive and node is not None:
                return encode_basestring(self.marker(canonical_json(node)))
            return _scalar_text(node)
        memo_key = (id(node), path, sensitive)
        cached = self._texts.get(memo_key)
        if cached is not None:
            return cached
        if kind is dict:
            marked = self._sensitive_keys.get(path, frozenset())
            members = []
            for key in sorted(node):
                value = node[key]
                value_kind = type(value)
                if key in marked or value_kind is dict or value_kind is list:
                    member = self._text(value, (*path, key), key in marked)
                elif value_kind is str and not value.startswith("${"):
                    member = encode_basestring(value)  # the common cases, without a call
                elif value_kind is not str:
                    member = _scalar_text(value)
                else:
                    member = self._text(value, (*path, key), key in marked)
                members.append(f"{encode_basestring(key)}:{member}")
            result = "{" + ",".join(members) + "}"
        else:
            child = (*path, "*")
            inner = sensitive or child in self.paths
            result = "[" + ",".join([self._text(value, child, inner) for value in node]) + "]"
        # Kept from the second sight on: the text of a subtree one spec alone holds (the
        # merged part of each session, or every node of a session spelled out whole) would
        # only cost memory. What was seen is a bounded set per place (see _SEEN_PER_PLACE).
        seen = self._seen.setdefault((path, sensitive), {})
        if id(node) in seen:
            self._texts[memo_key] = result
            self._kept.append(node)
        else:
            seen[id(node)] = None
            if len(seen) > _SEEN_PER_PLACE:
                del seen[next(iter(seen))]
        return result


_MISSING = object()
# How many subtrees a Redactor remembers having seen at each place of a spec (the most recent
# ones): a subtree of a file's defaults recurs in every session of that file, so its text is
# remembered on its second sight even when up to this many files' sessions are interleaved.
_SEEN_PER_PLACE = 64
_LITERALS: dict[Any, str] = {True: "true", False: "false", None: "null"}


def _scalar_text(value: Any) -> str:
    """A number, boolean or null as `json.dumps` writes it (ints and floats by their repr)."""
    kind = type(value)
    if kind is int:
        return int.__repr__(value)
    if kind is float:
        return float.__repr__(value)
    if kind is bool or value is None:
        return _LITERALS[value]
    return canonical_json(value)


def redact(spec: Any, paths: SensitivePaths, key: bytes, secrets: Mapping[str, str]) -> Any:
    """One spec redacted (see Redactor, for many)."""
    return Redactor(paths, key, secrets).redact(spec)


_RESOLVED_MARKER = re.compile(r"<sensitive (\$\{[^}]+\}) hmac:([0-9a-f]+)>")


def relaxed(recorded_json: str, unresolved: Set[str]) -> str:
    """The recorded canonical JSON with the hashes of the given references forgotten, as a spec
    redacted where those references cannot be resolved would show them. Comparing against it
    compares those references by name: without the secret, a rotation cannot be seen."""

    def forget(match: re.Match[str]) -> str:
        if match.group(1) in unresolved:
            return f"{_MARKER_PREFIX}{match.group(1)} hmac:{UNRESOLVED}>"
        return match.group(0)

    return _RESOLVED_MARKER.sub(forget, recorded_json)


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
    return lookup(document, pointer)
