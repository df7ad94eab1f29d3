"""PostgreSQL state URLs: the schema a URL names, its display form and password scrubbing.

A store uses the `schema` it is given, else the first usable entry of the URL's
`options=-csearch_path=...`, else `public`.

The URL's password never appears in an error message: stores name themselves by
`display_url` (`postgresql://user@host:port/db`), and driver messages go through `redact`
with every spelling of the password that `password_spellings` found.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote

import psycopg
from psycopg.conninfo import conninfo_to_dict

from reconciler.errors import StateError

DEFAULT_SCHEMA = "public"

# The user-info part of a URL: greedy up to the last "@" before the path, as libpq reads it.
_USERINFO = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://([^/?#]*)@")
# A password given as a URL query parameter or a key=value conninfo entry.
_PASSWORD_PARAM = re.compile(r"password\s*=\s*('(?:[^'\\]|\\.)*'|[^&\s]+)", re.IGNORECASE)


def password_spellings(url: str) -> list[str]:
    """Every spelling of the password in `url`, found without a full parse (the URL may not
    parse), longest first so that a longer spelling is scrubbed before a part of it."""
    found: list[str] = []
    userinfo = _USERINFO.match(url)
    if userinfo is not None and ":" in userinfo.group(1):
        found.append(userinfo.group(1).split(":", 1)[1])
    found.extend(value.strip("'") for value in _PASSWORD_PARAM.findall(url))
    spellings = {spelling for value in found for spelling in spellings_of(value)}
    return sorted(spellings, key=len, reverse=True)


def spellings_of(value: str) -> set[str]:
    """`value` as written and percent-decoded, leaving out empty strings."""
    return {spelling for spelling in (value, unquote(value)) if spelling}


def redact(error: BaseException | str, secrets: Iterable[str]) -> str:
    """The message of `error` with each of `secrets` (longest first) replaced by `***`."""
    message = str(error).strip()
    for secret in secrets:
        message = message.replace(secret, "***")
    return message


def display_url(params: Mapping[str, Any]) -> str:
    """The connection parameters as a URL without the password, for messages."""
    user = f"{params['user']}@" if params.get("user") else ""
    host = str(params.get("host") or params.get("hostaddr") or "")
    port = f":{params['port']}" if params.get("port") else ""
    return f"postgresql://{user}{host}{port}/{params.get('dbname') or ''}"


def schema_from_url(url: str) -> str:
    """The schema a store opened on `url` uses when none is given."""
    try:
        return schema_from_options(conninfo_to_dict(url))
    except psycopg.Error:
        raise StateError("the PostgreSQL state URL is not valid") from None


def schema_from_options(params: Mapping[str, Any]) -> str:
    """The first usable schema of a `-c search_path=...` in the `options` parameter, or
    `public`. Unquoted names are folded to lower case, as the server does."""
    search_path: str | None = None
    arguments = _split_options(str(params.get("options") or ""))
    for index, argument in enumerate(arguments):
        if argument == "-c" and index + 1 < len(arguments):
            setting = arguments[index + 1]
        elif argument.startswith("-c") or argument.startswith("--"):
            setting = argument[2:]
        else:
            continue
        name, equals, value = setting.partition("=")
        if equals and name.strip().lower().replace("-", "_") == "search_path":
            search_path = value  # the last setting wins, as on the server
    if search_path is not None:
        for entry in _split_search_path(search_path):
            if entry not in ("$user", "pg_catalog", "pg_temp"):
                return entry
    return DEFAULT_SCHEMA


def _split_options(options: str) -> list[str]:
    """libpq's `options`: arguments separated by spaces, a backslash escapes the next char."""
    arguments: list[str] = []
    current: list[str] = []
    escaped = False
    for char in options:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char.isspace():
            if current:
                arguments.append("".join(current))
                current = []
        else:
            current.append(char)
    if current:
        arguments.append("".join(current))
    return arguments


def _split_search_path(value: str) -> list[str]:
    """Comma-separated identifiers; a double-quoted one is taken as written ("" is a quote)."""
    entries: list[str] = []
    current: list[str] = []
    quoted = False
    in_quotes = False
    index = 0
    while index < len(value):
        char = value[index]
        if in_quotes:
            if char == '"' and value[index + 1 : index + 2] == '"':
                current.append('"')
                index += 1
            elif char == '"':
                in_quotes = False
            else:
                current.append(char)
        elif char == '"':
            in_quotes = quoted = True
        elif char == ",":
            entries.append(_identifier(current, quoted))
            current, quoted = [], False
        elif not char.isspace():
            current.append(char)
        index += 1
    entries.append(_identifier(current, quoted))
    return [entry for entry in entries if entry]


def _identifier(chars: list[str], quoted: bool) -> str:
    text = "".join(chars)
    return text if quoted else text.lower()
