"""Bytes → documents: parse JSON, TOML and YAML manifests into plain JSON-like values.

Pure: the shell reads the files (and enforces the size limit before reading); this module only
turns bytes into values, and any problem into one clear Problem naming the file — never a
traceback. YAML keeps the line of every node so later errors can point at a line.
"""

from __future__ import annotations

import functools
import json
import math
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any

from reconciler.core.secrets import lookup
from reconciler.errors import Problem, ValidationFailed

MAX_DEPTH = 64
MAX_FILE_BYTES = 8 * 1024 * 1024
# A YAML alias may expand to a large subtree; past this many built nodes the file is refused
# (the "billion laughs" defence) instead of exhausting memory.
MAX_YAML_NODES = 2_000_000

SUFFIXES = (".json", ".toml", ".yaml", ".yml")


@dataclass(frozen=True, slots=True)
class Document:
    """One parsed manifest; `lines` maps a JSON pointer to its 1-based line (YAML only).
    `holds_dollar`: False when no string of the file can contain a `$` (so no secret
    reference, nor a mistaken one): its sessions need no reference scan."""

    path: str
    data: Any
    lines: Mapping[str, int] = field(default_factory=dict)
    holds_dollar: bool = True


# How a `$` can be written in a manifest: as itself or escaped (JSON and TOML `\u0024`, TOML
# `\U00000024`, YAML `\x24`, `\u0024`, `\U00000024`).
_DOLLAR_SPELLINGS = (b"$", b"\\u0024", b"\\U00000024", b"\\x24")


def may_hold_dollar(data: bytes) -> bool:
    """Whether a parsed string of this file can contain a `$` (a fast scan of the bytes)."""
    return any(spelling in data for spelling in _DOLLAR_SPELLINGS)


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
    dollar = may_hold_dollar(data)
    try:
        if lower.endswith(".json"):
            value = _checked(path, _parse_json(path, text), text, _json_line)
            if _SURROGATE_ESCAPE.search(data):
                line_of = functools.partial(_json_line, text)
                _refuse_lone_surrogates(path, value, line_of, "as a pair, such as \\ud83d\\ude00")
            return Document(path, value, holds_dollar=dollar)
        if lower.endswith(".toml"):
            toml = _plain(_parse_toml(path, text))
            line_of = functools.partial(_toml_number_line, data=toml)
            return Document(path, _checked(path, toml, text, line_of), holds_dollar=dollar)
        if lower.endswith((".yaml", ".yml")):
            # yaml (and the YAML builder) are imported only when a YAML file is read.
            from reconciler.core.load_yaml import parse_yaml

            value, lines = parse_yaml(path, text)
            if _SURROGATE_ESCAPE.search(data):
                # (libyaml refuses them itself; PyYAML's Python parser, its fallback, does not.)
                _refuse_lone_surrogates(path, value, _line_in(lines), "as \\U0001F600")
            return Document(path, value, lines, holds_dollar=dollar)
    except RecursionError:
        raise _fail(path, f"nested deeper than {MAX_DEPTH} levels") from None
    raise _fail(path, "unsupported file type (expected .json, .toml, .yaml or .yml)")


def _fail(path: str, message: str, line: int | None = None, pointer: str = "") -> ValidationFailed:
    return ValidationFailed([Problem(path, pointer, message, line)])


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
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_json_constant)
    except _DuplicateKey as dup:
        from reconciler.core.positions import json_duplicate  # the error path only

        found = json_duplicate(text)
        if found is None:
            raise _fail(path, f'duplicate key "{dup.key}"') from None
        raise _fail(path, f'duplicate key "{found.key}"', found.line, found.pointer) from None
    except json.JSONDecodeError as exc:
        raise _fail(path, f"invalid JSON: {exc.msg} (column {exc.colno})", exc.lineno) from None
    except ValueError:  # an integer past Python's 4,300-digit conversion limit
        raise _huge_integer(path, text, _marked_json) from None


def _marked_json(text: str) -> Any:
    return json.loads(text, parse_constant=_json_constant)


# Integers are 64-bit and numbers finite: nothing else is a value any cloud field takes (a
# 401-digit IdleTimeout would be sent as is), and past 4,300 digits Python refuses to convert an
# integer at all. The parse keeps the numbers (JSON's NaN and Infinity as `Unrepresentable`);
# the depth walk then reports the first bad one at its pointer.
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
_MAX_INT_TEXT = 20  # digits and sign of INT_MIN
_FLOAT_MAX = sys.float_info.max


@dataclass(frozen=True, slots=True)
class Unrepresentable:
    """A number the manifest holds that no field can take (kept only to be reported)."""

    problem: str


def _json_constant(text: str) -> Unrepresentable:
    return Unrepresentable(f"{text} is not a number JSON allows")


def _integer_problem(text: str) -> str:
    digits = sum(character.isdigit() for character in text)
    shown = text if digits <= _MAX_INT_TEXT else f"a {digits:,}-digit integer"
    return f"{shown} is out of range: integers must be 64-bit ({INT_MIN} to {INT_MAX})"


def _number_problem(value: Any, written: str | None = None) -> str | None:
    """Why a parsed leaf is not a number a field can hold, or None for any other value.
    `written`: the number as the file spells it, where the parser keeps it (YAML)."""
    kind = type(value)
    if kind is int:
        return None if INT_MIN <= value <= INT_MAX else _integer_problem(str(value))
    if kind is float:
        if math.isfinite(value):
            return None
        if written is not None:
            return f"{written} is not a finite number"
        # JSON and TOML parse 1e400 to infinity: the text is gone, say what it became.
        return "a number beyond ±1.8e308 (a 64-bit float) is not a finite number"
    if kind is Unrepresentable:
        return str(value.problem)
    return None


_TOML_POSITION = re.compile(r"\(at line (\d+), column (\d+)\)")


_TOML_DUPLICATE = ("Cannot overwrite a value", "Cannot declare")
# An integer too long for Python to convert (digits, and TOML's `_` separators).
_HUGE_INTEGER = re.compile(r"(?<![\w.])[+-]?[0-9][0-9_]{4300,}(?![\w.])")


# A `\u` escape of a UTF-16 surrogate, in JSON (`\ud83d`) or YAML (also `\U0000d83d`; TOML
# refuses them itself). A pair of them is how JSON writes a character past U+FFFF, and the
# parser joins the pair; one alone is not a character: nothing could print it or send it.
_SURROGATE_ESCAPE = re.compile(rb"\\(?:u|U0000)[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _refuse_lone_surrogates(
    path: str, value: Any, line_of: Callable[[str], int | None], escaped: str
) -> None:
    """A ValidationFailed at the first key or string holding a lone surrogate (a file whose
    bytes escape one: the others cannot hold any). `escaped`: how the format escapes a
    character past U+FFFF."""
    found = _lone_surrogate(value, "")
    if found is None:
        return
    pointer, code = found
    message = (
        f"\\u{code:04x} alone is not a character (half of a surrogate pair): a character "
        f"past U+FFFF is escaped {escaped}, or written as itself"
    )
    shown = pointer.encode("utf-8", "backslashreplace").decode("utf-8")
    raise _fail(path, message, line_of(pointer), shown)


def _line_in(lines: Mapping[str, int]) -> Callable[[str], int | None]:
    return lambda pointer: lines.get(pointer or "/")


def _lone_surrogate(node: Any, pointer: str) -> tuple[str, int] | None:
    """(pointer, code point) of the first key or string with a lone surrogate, or None."""
    if type(node) is str:
        match = _SURROGATE.search(node)
        return None if match is None else (pointer, ord(match.group()))
    if type(node) is dict:
        for key, child in node.items():
            place = f"{pointer}/{_escape(key)}"
            match = _SURROGATE.search(key)
            found = (place, ord(match.group())) if match else _lone_surrogate(child, place)
            if found is not None:
                return found
    elif type(node) is list:
        for index, child in enumerate(node):
            found = _lone_surrogate(child, f"{pointer}/{index}")
            if found is not None:
                return found
    return None


def _json_line(text: str, pointer: str) -> int | None:
    from reconciler.core.positions import json_line  # the error path only

    return json_line(text, pointer)


def _parse_toml(path: str, text: str) -> Any:
    import tomllib  # only when a TOML file is read

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = _TOML_POSITION.search(message)
        line = int(match.group(1)) if match else None
        if line is not None and message.startswith(_TOML_DUPLICATE):
            from reconciler.core.positions import toml_duplicate

            found = toml_duplicate(text, line)
            if found is not None:
                raise _fail(path, f'duplicate key "{found.key}"', line, found.pointer) from None
        message = _TOML_POSITION.sub(f"(column {match.group(2)})", message) if match else message
        raise _fail(path, f"invalid TOML: {message}", line) from None
    except ValueError:
        raise _huge_integer(path, text, tomllib.loads) from None


def _huge_integer(path: str, text: str, parse: Callable[[str], Any]) -> ValidationFailed:
    """An integer past Python's conversion limit: its line, and its pointer when the file parses
    with that integer replaced by a marker string (it fails to when the digits were in a string,
    and then the line alone is given)."""
    match = _HUGE_INTEGER.search(text)
    if match is None:
        return _fail(path, "an integer of more than 4,300 digits is out of range")
    problem = _integer_problem(match.group(0))
    line = text.count("\n", 0, match.start()) + 1
    marker = "\x00reconciler-huge-integer\x00"
    try:
        data = parse(text[: match.start()] + json.dumps(marker) + text[match.end() :])
    except ValueError:  # also JSONDecodeError and TOMLDecodeError
        return _fail(path, problem, line)
    pointer = next((p for p, value in _leaves(data) if value == marker), "")
    return _fail(path, problem, line, pointer)


def _plain(value: Any) -> Any:
    """TOML dates and times become ISO strings, so every document is plain JSON data."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    return value


def _checked(path: str, value: Any, text: str, line_of: Callable[[str, str], int | None]) -> Any:
    """The parsed value, or a ValidationFailed at the first number no field can hold (with its
    line, found in the text only then)."""
    try:
        return _checked_depth(path, value)
    except _NumberOutOfRange as bad:
        raise _fail(path, bad.problem, line_of(text, bad.pointer), bad.pointer) from None


def _toml_number_line(text: str, pointer: str, data: Any) -> int | None:
    """TOML keeps no positions: the number's line is where its digits are written, when they
    appear once in the file."""
    value = lookup(data, pointer)
    if type(value) is not int:
        return None
    found = list(re.finditer(rf"(?<![\w.]){re.escape(str(value))}(?![\w.])", text))
    return text.count("\n", 0, found[0].start()) + 1 if len(found) == 1 else None


class _NumberOutOfRange(Exception):
    def __init__(self, pointer: str, problem: str) -> None:
        self.pointer = pointer
        self.problem = problem


def _checked_depth(path: str, value: Any) -> Any:
    """Refuse absurd nesting and numbers no field can hold; iterative so that the check itself
    cannot overflow.

    On the way, equal strings become one object: the parsers make a new string for every
    value, and the sessions of a file repeat most of theirs (a file of 100 sessions spelled out
    whole holds each URL, provider and prompt 100 times): 21 MB of string values were 4 MB
    of distinct ones at 10,000 sessions. Strings are immutable, so nothing can tell."""
    stack: list[tuple[Any, int]] = [(value, 1)] if type(value) in (dict, list) else []
    suspect = False
    strings: dict[str, str] = {}
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise _fail(path, f"nested deeper than {MAX_DEPTH} levels")
        for slot, child in node.items() if type(node) is dict else enumerate(node):
            kind = type(child)
            if kind is str:
                same = strings.setdefault(child, child)
                if same is not child:
                    node[slot] = same
            elif kind is dict or kind is list:
                stack.append((child, depth + 1))
            elif kind is int:
                suspect = suspect or not INT_MIN <= child <= INT_MAX
            elif kind is float:
                suspect = suspect or not -_FLOAT_MAX <= child <= _FLOAT_MAX  # inf, NaN
            elif kind is Unrepresentable:
                suspect = True
    if suspect or _number_problem(value) is not None:
        _raise_number_problem(path, value)
    return value


def _raise_number_problem(path: str, value: Any) -> None:
    for pointer, leaf in _leaves(value):
        problem = _number_problem(leaf)
        if problem is not None:
            raise _NumberOutOfRange(pointer, problem)


def _leaves(value: Any, pointer: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, f"{pointer}/{_escape(key)}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaves(item, f"{pointer}/{index}")
    else:
        yield pointer, value


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")
