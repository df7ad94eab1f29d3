"""Secret references: `${env:NAME}` and `${file:PATH}`, recognised here, resolved in the shell.

A reference is a whole string value. It is not itself secret (it names where the secret lives),
so it may appear in plans and state; the value it resolves to never does.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

# `${env:NAME}` takes a POSIX environment variable name; `${file:PATH}` any path without `}`.
REFERENCE = re.compile(r"\$\{(env(?=:[A-Za-z_][A-Za-z0-9_]*\})|file):([^}\n]+)\}")
# Anything shaped like an attempt at a reference, so a typo (`${vault:x}`, `${env:}`) is an error
# rather than a literal string silently sent to the cloud.
LOOKS_LIKE_REFERENCE = re.compile(r"\$\{.*\}\s*", re.DOTALL)
_ENV_ATTEMPT = re.compile(r"\$\{env:(.*)\}", re.DOTALL)
_BARE_NAME = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SHELL_VARIABLE = re.compile(r"\$(?:env:)?([A-Za-z_][A-Za-z0-9_]*)")
EXPECTED = "expected ${env:NAME} or ${file:PATH}"


def is_reference(value: object) -> bool:
    return (
        isinstance(value, str) and value.startswith("${") and REFERENCE.fullmatch(value) is not None
    )


def looks_like_reference(value: object) -> bool:
    return (
        isinstance(value, str)
        and value.startswith("${")
        and bool(LOOKS_LIKE_REFERENCE.fullmatch(value))
    )


def may_be_mistaken_reference(text: str) -> bool:
    """The cheap test that lets ordinary text through without a regex: only a string holding a
    `$` can be a reference or a mistaken one."""
    return "$" in text and not is_reference(text)


def reference_problem(text: str, *, sensitive: bool = False) -> str | None:
    """Why a string that is not a reference is a mistaken attempt at one, or None when it is
    ordinary text (a prompt saying "costs $5" is). `sensitive`: the value may be a credential,
    so the message quotes nothing of it (the hints say NAME instead)."""
    if not may_be_mistaken_reference(text):
        return None
    head = "invalid secret reference"
    if not sensitive:
        head += " " + json.dumps(text, ensure_ascii=False)
    whole = f"{head}: a secret reference must be the whole value"
    if is_reference(text.strip()):
        return f"{whole} (remove the spaces)"
    if looks_like_reference(text):
        env = _ENV_ATTEMPT.fullmatch(text)
        if env is not None and "}" not in env.group(1):
            name = "NAME" if sensitive else json.dumps(env.group(1), ensure_ascii=False)
            return (
                f"{head}: {name} is not an environment variable name (letters, digits and _, "
                "not starting with a digit)"
            )
        bare = _BARE_NAME.fullmatch(text)
        if bare is not None:
            return f"{head}: did you mean ${{env:{'NAME' if sensitive else bare.group(1)}}}?"
        if "${env:" in text or "${file:" in text:
            return f"{whole} ({EXPECTED})"
        return f"{head} ({EXPECTED})"
    if "${env:" in text or "${file:" in text:
        return f"{whole} ({EXPECTED})"
    shell = _SHELL_VARIABLE.fullmatch(text)
    if shell is not None:
        if sensitive:
            return f"{head}: a $NAME variable is not expanded (use ${{env:NAME}})"
        return f"{head}: did you mean ${{env:{shell.group(1)}}}?"
    return None


def iter_strings(value: Any, pointer: str = "") -> Iterator[tuple[str, str]]:
    """Every string leaf with its JSON pointer."""
    if isinstance(value, str):
        yield pointer, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from iter_strings(item, f"{pointer}/{escape_token(key)}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from iter_strings(item, f"{pointer}/{index}")


def escape_token(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def unescape_token(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


_ABSENT = object()


def lookup(document: Any, pointer: str, default: Any = None) -> Any:
    """The value at a JSON pointer, or `default` when nothing is there."""
    node = document
    for token in pointer_tokens(pointer):
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            return default
    return node


def exists(document: Any, pointer: str) -> bool:
    return lookup(document, pointer, _ABSENT) is not _ABSENT


def nearest_line(lines: Mapping[str, int], pointer: str) -> int | None:
    """The line of the pointer, or of its nearest ancestor that has one (None: no lines kept)."""
    if not lines:
        return None
    while pointer:
        if pointer in lines:
            return lines[pointer]
        pointer = pointer.rsplit("/", 1)[0]
    return lines.get("/")


def split_pointer(pointer: str) -> list[str]:
    if pointer in ("", "/"):
        return []
    return [unescape_token(token) for token in pointer[1:].split("/")]


@functools.lru_cache(maxsize=4096)
def pointer_tokens(pointer: str) -> tuple[str, ...]:
    """split_pointer, remembered: validation and planning look up the same few pointers (a
    provider's identity fields, its agent and target users) in every session."""
    return tuple(split_pointer(pointer))


def substitute(value: Any, secrets: Mapping[str, str]) -> Any:
    """The value with every reference replaced by its resolved secret (for the request only)."""
    if isinstance(value, str):
        return secrets[value] if is_reference(value) else value
    if isinstance(value, dict):
        return {key: substitute(item, secrets) for key, item in value.items()}
    if isinstance(value, list):
        return [substitute(item, secrets) for item in value]
    return value


_NOTHING: frozenset[str] = frozenset()


class ReferenceScanner:
    """Finds the references in many specs, scanning a subtree shared by several of them (what
    file `defaults` leave unchanged) only once. `scan` answers the references found and whether
    some string is a mistaken attempt at a reference (a typo to report).

    Only the subtrees registered with `share` are remembered: a session's own nodes are met
    once, and remembering each of them would only cost memory (a file of sessions spelled out
    whole, without defaults, has ~60 of them per session)."""

    def __init__(self) -> None:
        self._memo: dict[int, tuple[frozenset[str], bool]] = {}
        self._shared: set[int] = set()
        self._kept: list[Any] = []  # registered and memoised by id(): keep the nodes alive
        # Strings holding a `$`, by value: the same reference recurs in every session.
        self._strings: dict[str, tuple[frozenset[str], bool]] = {}

    def scan(self, node: Any) -> tuple[frozenset[str], bool]:
        if isinstance(node, str):
            return self._string(node) if "$" in node else (_NOTHING, False)
        if not isinstance(node, dict | list):
            return _NOTHING, False
        cached = self._memo.get(id(node))
        if cached is not None:
            return cached
        found: set[str] = set()
        malformed = self._scan_into(node, found)
        result = (frozenset(found) if found else _NOTHING, malformed)
        if id(node) in self._shared:
            self._memo[id(node)] = result
        return result

    def _scan_into(self, node: dict[str, Any] | list[Any], found: set[str]) -> bool:
        """Add the references below `node` to `found`; whether one is malformed. A loop over a
        session's own nodes (no result made per node); a shared subtree is scanned (and
        remembered) whole."""
        malformed = False
        stack: list[Any] = [node]
        shared = self._shared
        while stack:
            current = stack.pop()
            for child in current.values() if type(current) is dict else current:
                kind = type(child)
                if kind is str:
                    if "$" not in child:
                        continue
                    references, bad = self._strings.get(child) or self._string(child)
                elif kind is dict or kind is list:
                    if id(child) not in shared:
                        stack.append(child)
                        continue
                    references, bad = self.scan(child)
                else:
                    continue  # a number, a boolean or null holds no reference
                if references:
                    found.update(references)
                malformed = malformed or bad
        return malformed

    def share(self, tree: Any) -> None:
        """Remember the scan of every object and list in `tree`: it is shared by many specs."""
        stack = [tree]
        while stack:
            node = stack.pop()
            if type(node) is dict or type(node) is list:
                self._shared.add(id(node))
                self._kept.append(node)
                stack.extend(node.values() if type(node) is dict else node)

    def _string(self, text: str) -> tuple[frozenset[str], bool]:
        if is_reference(text):
            result = frozenset((text,)), False
        else:
            result = _NOTHING, reference_problem(text) is not None
        self._strings[text] = result
        return result
