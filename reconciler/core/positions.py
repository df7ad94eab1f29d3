"""Positions in the text of JSON and TOML files, which their parsers do not keep: where a
repeated key is (the pointer of the object holding it, and the key's line), and the line of a
pointer.

Only called once a problem was found (the error path), so these walk the text again rather than
slow the parse of every valid file down with position tracking.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from reconciler.core.secrets import escape_token


@dataclass(frozen=True, slots=True)
class DuplicateKey:
    pointer: str  # the object that holds the key twice ("" is the whole document)
    key: str
    line: int


class _Found(Exception):
    def __init__(self, found: DuplicateKey) -> None:
        self.found = found


class _Reached(Exception):
    def __init__(self, line: int) -> None:
        self.line = line


_SPACE = re.compile(r"[ \t\n\r]*")
_SCALAR = json.JSONDecoder(parse_int=str, parse_float=str, parse_constant=str)


def json_duplicate(text: str) -> DuplicateKey | None:
    """The first key, in the order of the text, that its object repeats (None: none found, or
    the text is not valid JSON past that point; the caller then reports without a position)."""
    try:
        _JsonWalk(text).value(0, "")
    except _Found as found:
        return found.found
    except (ValueError, IndexError, RecursionError):
        return None
    return None


def json_line(text: str, pointer: str) -> int | None:
    """The line where the value at `pointer` starts (None: not found)."""
    try:
        _JsonWalk(text, pointer).value(0, "")
    except _Reached as reached:
        return reached.line
    except (_Found, ValueError, IndexError, RecursionError):
        return None
    return None


class _JsonWalk:
    def __init__(self, text: str, target: str | None = None) -> None:
        self.text = text
        self.target = target

    def skip(self, index: int) -> int:
        match = _SPACE.match(self.text, index)
        return match.end() if match else index

    def value(self, index: int, pointer: str) -> int:
        index = self.skip(index)
        if pointer == self.target:
            raise _Reached(self.text.count("\n", 0, index) + 1)
        opening = self.text[index]
        if opening == "{":
            return self.members(index + 1, pointer)
        if opening == "[":
            return self.items(index + 1, pointer)
        _, end = _SCALAR.raw_decode(self.text, index)
        return int(end)

    def members(self, index: int, pointer: str) -> int:
        seen: set[str] = set()
        index = self.skip(index)
        if self.text[index] == "}":
            return index + 1
        while True:
            start = index
            key, index = _SCALAR.raw_decode(self.text, index)
            if key in seen:
                line = self.text.count("\n", 0, start) + 1
                raise _Found(DuplicateKey(pointer, key, line))
            seen.add(key)
            index = self.skip(index) + 1  # past ":"
            index = self.skip(self.value(index, f"{pointer}/{escape_token(key)}"))
            if self.text[index] != ",":
                return index + 1
            index = self.skip(index + 1)

    def items(self, index: int, pointer: str) -> int:
        index = self.skip(index)
        if self.text[index] == "]":
            return index + 1
        position = 0
        while True:
            index = self.skip(self.value(index, f"{pointer}/{position}"))
            position += 1
            if self.text[index] != ",":
                return index + 1
            index = self.skip(index + 1)


# TOML: the pointer is worked out from the table headers above the line tomllib names.
_KEY_PART = r"""(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|'[^']*')"""
_DOTTED = rf"{_KEY_PART}(?:\s*\.\s*{_KEY_PART})*"
_HEADER = re.compile(rf"^\s*(\[\[?)\s*({_DOTTED})\s*\]\]?")
_ASSIGNMENT = re.compile(rf"^\s*({_DOTTED})\s*=")
_PART = re.compile(_KEY_PART)


def toml_duplicate(text: str, line: int) -> DuplicateKey | None:
    """The key assigned (or table declared) again on `line`, with the pointer of the table
    holding it; None when the line is not a simple `key = value` or `[table]`."""
    lines = text.splitlines()
    if not 1 <= line <= len(lines):
        return None
    table: list[str] = []
    counts: dict[tuple[str, ...], int] = {}
    for content in lines[: line - 1]:
        header = _HEADER.match(content)
        if header is None:
            continue
        parts = _parts(header.group(2))
        if header.group(1) == "[[":
            key = tuple(parts)
            counts = {k: v for k, v in counts.items() if k[: len(key)] != key or k == key}
            counts[key] = counts.get(key, 0) + 1
            table = _indexed(parts, counts)
        else:
            table = _indexed(parts, counts)
    target = lines[line - 1]
    header = _HEADER.match(target)
    assignment = _ASSIGNMENT.match(target)
    if header is not None and header.group(1) == "[":
        parts = _parts(header.group(2))
        return DuplicateKey(_pointer(_indexed(parts[:-1], counts)), parts[-1], line)
    if assignment is not None:
        parts = _parts(assignment.group(1))
        return DuplicateKey(_pointer(table + parts[:-1]), parts[-1], line)
    return None


def _parts(dotted: str) -> list[str]:
    parts = []
    for match in _PART.finditer(dotted):
        part = match.group(0)
        if part.startswith('"'):
            part = json.loads(part)
        elif part.startswith("'"):
            part = part[1:-1]
        parts.append(part)
    return parts


def _indexed(parts: list[str], counts: dict[tuple[str, ...], int]) -> list[str]:
    """The path with the current index after each array of tables it passes through."""
    tokens: list[str] = []
    for end in range(1, len(parts) + 1):
        tokens.append(parts[end - 1])
        count = counts.get(tuple(parts[:end]))
        if count:
            tokens.append(str(count - 1))
    return tokens


def _pointer(tokens: list[str]) -> str:
    return "".join(f"/{escape_token(token)}" for token in tokens)
