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

import functools
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass, field
from json.encoder import encode_basestring
from typing import Any

from reconciler.core.secrets import escape_token, is_reference, lookup

SensitivePaths = frozenset[tuple[str, ...]]  # "*" stands for any array index
UNRESOLVED = "unresolved"
_MARKER_PREFIX = "<sensitive "


# One encoder for every call: json.dumps with options builds a new JSONEncoder each time,
# which costs more than encoding a small object.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_json(value: Any) -> str:
    return _CANONICAL.encode(value)


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


@functools.cache
def sensitive_keys(paths: SensitivePaths) -> dict[tuple[str, ...], frozenset[str]]:
    """For each object path, which of its keys the sensitive paths name (do not mutate: the
    answer is shared by every caller with the same paths)."""
    keys: dict[tuple[str, ...], set[str]] = {}
    for path in paths:
        if path:
            keys.setdefault(path[:-1], set()).add(path[-1])
    return {parent: frozenset(names) for parent, names in keys.items()}


def is_marker(value: object) -> bool:
    return isinstance(value, str) and value.startswith(_MARKER_PREFIX) and value.endswith(">")


def keyed_hash(key: bytes, value: str) -> str:
    """A secret value as the state may keep it: HMAC-SHA256 under the state's key, shortened."""
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
        self.digests = {reference: keyed_hash(key, value) for reference, value in secrets.items()}
        self._markers: dict[str, str] = {}
        self._memo: dict[tuple[int, tuple[str, ...], bool], Any] = {}
        self._trie = _trie_of(paths)
        self._reference_texts: dict[str, str] = {}
        # The memo is keyed by id(): keep every memoised node alive so no id is reused.
        self._kept: list[Any] = []
        # For each object path, which of its keys are sensitive: no tuple is built per leaf.
        self._sensitive_keys = sensitive_keys(paths)

    def marker(self, value: str) -> str:
        # Once per distinct value: the same references (and literals) recur in every spec.
        known = self._markers.get(value)
        if known is None:
            known = self._markers[value] = self._new_marker(value)
        return known

    def _new_marker(self, value: str) -> str:
        if is_reference(value):
            return f"{_MARKER_PREFIX}{value} hmac:{self.digests.get(value, UNRESOLVED)}>"
        return f"{_MARKER_PREFIX}hmac:{keyed_hash(self.key, value)}>"

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
        """`canonical_json(self.redact(spec))`, with the C encoder doing the work: the values of
        the schema's sensitive fields are marked in a copy made only along those paths, the copy
        is encoded, and any reference elsewhere is then marked in the text itself (a reference
        is a whole string value, so it is a JSON string starting with `${`, found by a regex
        search; the text is searched only when it holds one)."""
        encoded = canonical_json(self._literals_marked(spec, self._trie, False))
        return self._references_marked(encoded) if '"${' in encoded else encoded

    def _literals_marked(self, node: Any, trie: _Trie, sensitive: bool) -> Any:
        """The node with each sensitive value below it replaced by its marker (a reference's
        marker says which reference)."""
        return marked_along(node, trie, sensitive, self._mark_leaf)

    def _mark_leaf(self, value: Any) -> str:
        return self.marker(value if type(value) is str else canonical_json(value))

    def _references_marked(self, encoded: str) -> str:
        parts: list[str] = []
        done = 0
        for found in _REFERENCE_TEXT.finditer(encoded):
            start = found.start()
            if _escaped(encoded, start):
                continue  # a quote inside a string ("a\"${x}"), not a string's start
            text = found.group()
            marked = self._reference_texts.get(text)
            if marked is None:
                value = json.loads(text)
                marked = encode_basestring(self.marker(value)) if is_reference(value) else text
                self._reference_texts[text] = marked
            parts += (encoded[done:start], marked)
            done = found.end()
        parts.append(encoded[done:])
        return "".join(parts)


@dataclass(slots=True)
class _Trie:
    """The sensitive paths as a tree: `sensitive` where a path ends."""

    children: dict[str, _Trie] = field(default_factory=dict)
    sensitive: bool = False


_NO_TRIE = _Trie()
# A JSON string value (not a key: no `:` follows it) starting with `${`, in canonical JSON.
_REFERENCE_TEXT = re.compile(r'"\$\{(?:[^"\\]|\\.)*"(?!:)')


@functools.cache
def _trie_of(paths: SensitivePaths) -> _Trie:
    root = _Trie()
    for path in paths:
        node = root
        for token in path:
            node = node.children.setdefault(token, _Trie())
        node.sensitive = True
    return root


def sensitive_trie(paths: SensitivePaths) -> _Trie:
    """The paths as the tree `marked_along` and `sensitive_leaves` follow (made once each)."""
    return _trie_of(paths)


def marked_along(node: Any, trie: _Trie, sensitive: bool, mark: Callable[[Any], Any]) -> Any:
    """The node with each sensitive leaf below it replaced by `mark(leaf)` (None is left
    alone; a leaf `mark` returns as it is stays), copied only along the sensitive paths: the
    node itself when nothing changed (the same object, not a copy). A flag reaches a list's
    items, while an object's members are sensitive by their own paths only (as `_walk`).
    Its cost is the sensitive paths', not the spec's: a walk of every node was most of a
    JSON plan's rendering."""
    kind = type(node)
    if kind is dict:
        copied: dict[str, Any] | None = None
        for key, below in trie.children.items():
            child = node.get(key, _MISSING)
            if child is _MISSING:
                continue
            if type(child) is str:  # most sensitive fields: marked here, without a call
                if not below.sensitive:
                    continue
                marked: Any = mark(child)
            else:
                marked = marked_along(child, below, below.sensitive, mark)
            if marked is child:
                continue
            copied = dict(node) if copied is None else copied
            copied[key] = marked
        return node if copied is None else copied
    if kind is list:
        items = trie.children.get("*", _NO_TRIE)
        inner = sensitive or items.sensitive
        if not inner and not items.children:
            return node
        marked_items = [marked_along(item, items, inner, mark) for item in node]
        same = all(a is b for a, b in zip(marked_items, node, strict=True))
        return node if same else marked_items
    if not sensitive or node is None:
        return node
    return mark(node)


def sensitive_leaves(node: Any, trie: _Trie) -> list[tuple[str, Any]]:
    """(pointer, value) of each sensitive leaf below the node but None, by the rules of
    `marked_along`, visiting only the sensitive paths."""
    found: list[tuple[str, Any]] = []
    _collect_sensitive(node, trie, False, "", found)
    return found


def _collect_sensitive(
    node: Any, trie: _Trie, sensitive: bool, pointer: str, found: list[tuple[str, Any]]
) -> None:
    kind = type(node)
    if kind is dict:
        for key, below in trie.children.items():
            child = node.get(key, _MISSING)
            if child is _MISSING:
                continue
            if type(child) is str:  # most sensitive fields: without a call
                if below.sensitive:
                    found.append((f"{pointer}/{escape_token(key)}", child))
            else:
                place = f"{pointer}/{escape_token(key)}"
                _collect_sensitive(child, below, below.sensitive, place, found)
    elif kind is list:
        items = trie.children.get("*", _NO_TRIE)
        inner = sensitive or items.sensitive
        if inner or items.children:
            for index, item in enumerate(node):
                _collect_sensitive(item, items, inner, f"{pointer}/{index}", found)
    elif sensitive and node is not None:
        found.append((pointer, node))


def _escaped(text: str, position: int) -> bool:
    """Whether the character at `position` is escaped: an odd run of backslashes before it."""
    run = 0
    while position - run > 0 and text[position - run - 1] == "\\":
        run += 1
    return run % 2 == 1


_MISSING = object()


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
