"""Strict settings: every unknown name and every bad value as one line that names the setting the
way the user wrote it (`RECONCILER_MAX_STOPS` in the environment, `reconciler.toml:3: max_stops`
in the file), with a did-you-mean hint for a misspelt name.

pydantic-settings ignores environment variables it does not know (it only looks up the names of
its fields), so the environment is checked here against the names the model declares; unknown
keys in `reconciler.toml` are refused by the models' `extra="forbid"` and worded here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr

ENV_PREFIX = "RECONCILER_"
NESTED_DELIMITER = "__"
SETTINGS_FILE = "reconciler.toml"


def setting_names(
    model: type[BaseModel], prefix: tuple[str, ...] = ()
) -> dict[str, tuple[str, ...]]:
    """Every setting's environment name (upper case) → its location in the model."""
    names: dict[str, tuple[str, ...]] = {}
    for field_name, info in model.model_fields.items():
        location = (*prefix, field_name)
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names.update(setting_names(annotation, location))
        else:
            names[environment_name(location)] = location
    return names


def environment_name(location: Sequence[str | int]) -> str:
    return ENV_PREFIX + NESTED_DELIMITER.join(str(part) for part in location).upper()


def unknown_environment(environ: Mapping[str, str], known: Mapping[str, object]) -> list[str]:
    """A line for each RECONCILER_* variable that names no setting."""
    problems: list[str] = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in known:
            continue
        import difflib  # only for a name that is not known

        close = difflib.get_close_matches(upper, list(known), n=1, cutoff=0.8)
        hint = f" (did you mean {close[0]}?)" if close else ""
        problems.append(f"unknown setting {name} in the environment{hint}")
    return problems


def toml_problem(path: Path) -> str | None:
    """The settings file's syntax error as one line, or None when it parses (or is absent)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"{path}: cannot read: {exc.strerror or exc}"
    import tomllib  # only when the settings file exists

    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return f"{path}: invalid TOML: {exc}"
    return None


def value_problems(
    errors: Sequence[Mapping[str, Any]],
    environ: Mapping[str, str],
    known: Mapping[str, tuple[str, ...]],
    model: type[BaseModel],
    toml_path: Path,
) -> list[str]:
    """pydantic's errors, one line each, located where the user set the value."""
    present = {name.upper(): name for name in environ}
    lines = _toml_lines(toml_path)
    problems: list[str] = []
    for error in errors:
        location = tuple(str(part) for part in error.get("loc", ()))
        env_name = environment_name(location)
        if error.get("type") == "extra_forbidden":
            if env_name in present:
                continue  # reported by unknown_environment, under the name the user typed
            problems.append(_unknown_key(location, known, toml_path, lines))
            continue
        what = _message(error, secret=_is_secret(model, location))
        if env_name in present:
            problems.append(f"{present[env_name]}: {what}")
        else:
            problems.append(f"{_toml_place(location, toml_path, lines)}: {what}")
    return problems


def _unknown_key(
    location: tuple[str, ...],
    known: Mapping[str, tuple[str, ...]],
    toml_path: Path,
    lines: Mapping[tuple[str, ...], int],
) -> str:
    siblings = sorted(
        loc[-1] for loc in known.values() if len(loc) == len(location) and loc[:-1] == location[:-1]
    )
    import difflib

    close = difflib.get_close_matches(location[-1], siblings, n=1, cutoff=0.75)
    hint = f' (did you mean "{close[0]}"?)' if close else ""
    return f'{_toml_place(location, toml_path, lines)}: unknown setting "{location[-1]}"{hint}'


def _toml_place(
    location: tuple[str, ...], toml_path: Path, lines: Mapping[tuple[str, ...], int]
) -> str:
    line = lines.get(location)
    where = f"{toml_path}:{line}" if line else str(toml_path)
    return f"{where}: {'.'.join(location)}"


def _message(error: Mapping[str, Any], *, secret: bool) -> str:
    message = str(error.get("msg", "invalid value"))
    message = re.sub(r"^Input should be ", "must be ", message)
    message = re.sub(r"^Value error, ", "", message)
    if secret or "input" not in error:
        return message
    shown = json.dumps(error["input"], ensure_ascii=False, default=str)
    if len(shown) > 60:
        shown = shown[:59] + "…"
    return f"{message} (got {shown})"


def _is_secret(model: type[BaseModel], location: tuple[str, ...]) -> bool:
    current: Any = model
    for part in location:
        fields = getattr(current, "model_fields", {})
        if part not in fields:
            return True  # unknown: never echo what might be a credential
        current = fields[part].annotation
    return "SecretStr" in repr(current) or current is SecretStr


_TABLE = re.compile(r"^\s*\[\s*([A-Za-z0-9_.\s\"-]+?)\s*\]\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_-]+)\s*=")


def _toml_lines(path: Path) -> dict[tuple[str, ...], int]:
    """Where each `key = ...` of a simple settings file is written (tables of bare keys only:
    the settings are flat or one table deep, so nothing cleverer is needed to point at a line)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return {}
    found: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    for number, line in enumerate(text.splitlines(), start=1):
        heading = _TABLE.match(line)
        if heading:
            table = tuple(part.strip().strip('"') for part in heading.group(1).split("."))
            continue
        key = _KEY.match(line)
        if key:
            found.setdefault((*table, key.group(1)), number)
    return found
