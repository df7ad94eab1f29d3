"""Resolving secret references: the only place that reads `${env:..}` and `${file:..}` values."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.core.secrets import REFERENCE


@dataclass(frozen=True, slots=True)
class Resolved:
    """What the references resolved to here, and why the others did not.

    An empty or whitespace-only value counts as unresolved: CI systems give an empty string for
    a secret that is not configured, and sending a blank key would restart live sessions with it.
    """

    values: dict[str, str] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)  # reference → why, for messages
    empty: frozenset[str] = frozenset()


def resolve(references: Iterable[str], environ: Mapping[str, str] = os.environ) -> Resolved:
    values: dict[str, str] = {}
    failures: dict[str, str] = {}
    empty: set[str] = set()
    for reference in sorted(set(references)):
        match = REFERENCE.fullmatch(reference)
        if match is None:
            failures[reference] = "not a secret reference"
            continue
        kind, target = match.groups()
        if kind == "env":
            value = environ.get(target)
            if value is None:
                failures[reference] = f"environment variable {target} is not set"
                continue
            source = f"environment variable {target}"
        else:
            try:
                value = Path(target).expanduser().read_text(encoding="utf-8").rstrip("\r\n")
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                failures[reference] = f"cannot read file {target}: {reason}"
                continue
            source = f"file {target}"
        if not value.strip():
            failures[reference] = f"{source} is {'empty' if not value else 'only whitespace'}"
            empty.add(reference)
            continue
        values[reference] = value
    return Resolved(values, failures, frozenset(empty))
