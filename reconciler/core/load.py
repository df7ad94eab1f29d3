"""Bytes → documents: parse JSON, TOML and YAML manifests into plain JSON-like values.

Pure: the shell reads the files (and enforces the size limit before reading); this module only
turns bytes into values, and any problem into one clear Problem naming the file — never a
traceback. YAML keeps the line of every node so later errors can point at a line.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any

import yaml

from reconciler.errors import Problem, ValidationFailed

MAX_DEPTH = 64
MAX_FILE_BYTES = 8 * 1024 * 1024
# A YAML alias may expand to a large subtree; past this many built nodes the file is refused
# (the "billion laughs" defence) instead of exhausting memory.
MAX_YAML_NODES = 2_000_000

SUFFIXES = (".json", ".toml", ".yaml", ".yml")


@dataclass(frozen=True, slots=True)
class Document:
    """One parsed manifest; `lines` maps a JSON pointer to its 1-based line (YAML only)."""

    path: str
    data: Any
    lines: Mapping[str, int] = field(default_factory=dict)


def parse_document(path: str, data: bytes) -> Document:
    """Parse one file's bytes by its suffix; raise ValidationFailed with one Problem."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        message = f"not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        raise _fail(path, message) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    lower = path.lower()
    try:
        if lower.endswith(".json"):
            return Document(path, _checked_depth(path, _parse_json(path, text)))
        if lower.endswith(".toml"):
            return Document(path, _checked_depth(path, _plain(_parse_toml(path, text))))
        if lower.endswith((".yaml", ".yml")):
            value, lines = _parse_yaml(path, text)
            return Document(path, value, lines)
    except RecursionError:
        raise _fail(path, f"nested deeper than {MAX_DEPTH} levels") from None
    raise _fail(path, "unsupported file type (expected .json, .toml, .yaml or .yml)")


def _fail(path: str, message: str, line: int | None = None) -> ValidationFailed:
    return ValidationFailed([Problem(path, "", message, line)])


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return result


def _parse_json(path: str, text: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates)
    except _DuplicateKey as dup:
        raise _fail(path, f'duplicate key "{dup.key}"') from None
    except json.JSONDecodeError as exc:
        raise _fail(path, f"invalid JSON: {exc.msg} (column {exc.colno})", exc.lineno) from None


_TOML_POSITION = re.compile(r"\(at line (\d+), column (\d+)\)")


def _parse_toml(path: str, text: str) -> Any:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = _TOML_POSITION.search(message)
        line = int(match.group(1)) if match else None
        message = _TOML_POSITION.sub(f"(column {match.group(2)})", message) if match else message
        raise _fail(path, f"invalid TOML: {message}", line) from None


def _plain(value: Any) -> Any:
    """TOML dates and times become ISO strings, so every document is plain JSON data."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    return value


def _checked_depth(path: str, value: Any) -> Any:
    """Refuse absurd nesting; iterative so that the check itself cannot overflow."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise _fail(path, f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(node, dict):
            stack.extend(
                (child, depth + 1) for child in node.values() if isinstance(child, dict | list)
            )
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node if isinstance(child, dict | list))
    return value


_YamlLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
_MERGE_TAG = "tag:yaml.org,2002:merge"


def _parse_yaml(path: str, text: str) -> tuple[Any, dict[str, int]]:
    loader = _YamlLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}
        builder = _YamlBuilder(path, loader)
        return builder.build(node, "", 1), builder.lines
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or exc.context or "syntax error"
        raise _fail(path, f"invalid YAML: {problem}", line) from None
    except yaml.YAMLError as exc:
        raise _fail(path, f"invalid YAML: {exc}") from None
    finally:
        loader.dispose()


class _YamlBuilder:
    """Turns a composed YAML node graph into values, remembering each pointer's line."""

    def __init__(self, path: str, loader: Any) -> None:
        self.path = path
        self.loader = loader
        self.lines: dict[str, int] = {}
        self.built = 0

    def build(self, node: yaml.Node, pointer: str, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise _fail(self.path, f"nested deeper than {MAX_DEPTH} levels", _line(node))
        self.built += 1
        if self.built > MAX_YAML_NODES:
            raise _fail(self.path, "too many nodes after expanding aliases", _line(node))
        self.lines.setdefault(pointer or "/", _line(node))
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, pointer, depth)
        if isinstance(node, yaml.SequenceNode):
            return [
                self.build(item, f"{pointer}/{index}", depth + 1)
                for index, item in enumerate(node.value)
            ]
        if node.tag == _TIMESTAMP_TAG:
            return str(node.value)  # keep dates as written: manifests are JSON data
        return self.loader.construct_object(node, deep=True)

    def _mapping(self, node: yaml.MappingNode, pointer: str, depth: int) -> dict[str, Any]:
        result: dict[str, Any] = {}
        merged: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                sources = (
                    value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                )
                for source in sources:
                    value = self.build(source, pointer, depth)
                    if isinstance(value, dict):
                        merged.update({k: v for k, v in value.items() if k not in merged})
                continue
            key = self.loader.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                key = str(key)
            if key in result:
                raise _fail(self.path, f'duplicate key "{key}"', _line(key_node))
            child = f"{pointer}/{_escape(key)}"
            result[key] = self.build(value_node, child, depth + 1)
        for key, value in merged.items():
            result.setdefault(key, value)
        return result


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")
