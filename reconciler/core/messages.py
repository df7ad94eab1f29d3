"""Schema errors in the user's words: values spelled as in their file (JSON: `null`, `false`,
`["a", "b"]`), never as Python prints them (`None`, `False`, `['a', 'b']`), and patterns without
the regex guards the schemas carry for Python's sake."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jsonschema.exceptions import ValidationError

# Appended to anchored patterns because Python's `$` also matches before a final newline; it
# says nothing to a reader.
_END_GUARD = "(?![\\s\\S])"
# Whitespace as Python's str.isspace() and str.strip() know it, spelled out in the schemas
# because regex engines disagree on `\s` (ECMA-262, which editors and the Rust validator follow,
# counts U+FEFF and not U+001C-U+001F or U+0085; Python the reverse): written as this class, the
# rule means the same to every engine.
WHITESPACE = r"\t\n\x0b\x0c\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
NOT_WHITESPACE = f"[^{WHITESPACE}]"
# The pattern of credentials: at least one character that is not whitespace.
NOT_BLANK = NOT_WHITESPACE
_LIMIT = 60


def spelled(value: Any, limit: int = _LIMIT) -> str:
    """A value as the user would write it in JSON, clipped when long."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except ValueError:  # an integer past Python's 4,300-digit conversion limit
        return "a number of more than 4,300 digits"
    except TypeError:
        text = str(value)
    if len(text) <= limit:
        return text
    return text[: limit - 11] + "…" + text[-10:]


def schema_message(error: ValidationError) -> str | None:
    """The message for a failed keyword, or None when nothing needs saying (a blank secret
    that is also empty is reported once, by minLength). A credential's value is not quoted,
    unless it is blank and so says nothing."""
    keyword, expected, value = error.validator, error.validator_value, error.instance
    blank = isinstance(value, str) and not value.strip()
    credential = error.schema.get("x-sensitive") is True
    shown = "the sensitive value" if credential and not blank else spelled(value)
    if keyword == "type":
        names = expected if isinstance(expected, list) else [expected]
        return f"{shown} is not of type {' or '.join(json.dumps(n) for n in names)}"
    if keyword == "enum":
        return f"{shown} is not one of {spelled(expected, 200)}"
    if keyword == "const":
        return f"{shown} is not {spelled(expected)}"
    if keyword == "pattern":
        if expected == NOT_BLANK:
            return None if value == "" else f"{shown} is blank: it must not be only whitespace"
        pattern = str(expected).removesuffix(_END_GUARD).replace(NOT_WHITESPACE, "\\S")
        return f"{shown} does not match the pattern {pattern}"
    if keyword in ("minLength", "minItems"):
        if expected == 1:
            return f"{shown} should be non-empty"
        unit = "characters" if keyword == "minLength" else "items"
        return f"{shown} is too short (at least {expected} {unit})"
    if keyword in ("maxLength", "maxItems"):
        unit = "characters" if keyword == "maxLength" else "items"
        unit = unit[:-1] if expected == 1 else unit
        return f"{shown} is too long (at most {expected} {unit})"
    if keyword == "minimum":
        return f"{shown} is less than the minimum of {spelled(expected)}"
    if keyword == "maximum":
        return f"{shown} is greater than the maximum of {spelled(expected)}"
    if keyword == "exclusiveMinimum":
        return f"{shown} must be greater than {spelled(expected)}"
    if keyword == "exclusiveMaximum":
        return f"{shown} must be less than {spelled(expected)}"
    if keyword == "uniqueItems":
        return f"{shown} has repeated items"
    if keyword == "format":
        return f"{shown} is not a valid {expected}"
    if credential and not blank:
        return f"the sensitive value breaks the schema's {keyword} rule"
    return _generic(error.message, value, expected)


def _generic(message: str, value: Any, expected: Any) -> str:
    """Any other keyword: jsonschema's sentence with its Python spellings replaced."""
    for python in (value, expected):
        quoted = _repr(python)
        if quoted and quoted in message:
            message = message.replace(quoted, spelled(python, 200))
    return message if len(message) <= 200 else message[:199] + "…"


def _repr(value: Any) -> str:
    try:
        return repr(value)
    except ValueError:
        return ""
