"""Secret references: `${env:NAME}` and `${file:PATH}`, recognised here, resolved in the shell.

A reference is a whole string value. It is not itself secret (it names where the secret lives),
so it may appear in plans and state; the value it resolves to never does.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

REFERENCE = re.compile(r"\$\{(env|file):([^}\n]+)\}")
# Anything shaped like an attempt at a reference, so a typo (`${vault:x}`, `${env:}`) is an error
# rather than a literal string silently sent to the cloud.
LOOKS_LIKE_REFERENCE = re.compile(r"\$\{.*\}\s*", re.DOTALL)


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


def references_in(value: Any) -> set[str]:
    return {text for _, text in iter_strings(value) if is_reference(text)}


def escape_token(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def unescape_token(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def split_pointer(pointer: str) -> list[str]:
    if pointer in ("", "/"):
        return []
    return [unescape_token(token) for token in pointer[1:].split("/")]


def substitute(value: Any, secrets: Mapping[str, str]) -> Any:
    """The value with every reference replaced by its resolved secret (for the request only)."""
    if isinstance(value, str):
        return secrets[value] if is_reference(value) else value
    if isinstance(value, dict):
        return {key: substitute(item, secrets) for key, item in value.items()}
    if isinstance(value, list):
        return [substitute(item, secrets) for item in value]
    return value
