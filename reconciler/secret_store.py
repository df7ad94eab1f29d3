"""Resolving secret references: the only place that reads `${env:..}` and `${file:..}` values."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from reconciler.core.secrets import REFERENCE
from reconciler.errors import SecretError


def resolve(
    references: Iterable[str], environ: Mapping[str, str] = os.environ, *, strict: bool
) -> dict[str, str]:
    """Values of the references that can be resolved here.

    strict: every reference must resolve (apply: before any call is made); otherwise those that
    cannot are left out (plan: a pull-request job may hold no secrets).
    """
    values: dict[str, str] = {}
    missing: list[str] = []
    for reference in sorted(set(references)):
        match = REFERENCE.fullmatch(reference)
        if match is None:
            missing.append(f"{reference} (not a reference)")
            continue
        kind, target = match.groups()
        if kind == "env":
            value = environ.get(target)
            if value is None:
                missing.append(f"{reference} (environment variable {target} is not set)")
                continue
        else:
            try:
                value = Path(target).expanduser().read_text(encoding="utf-8").rstrip("\r\n")
            except OSError as exc:
                missing.append(f"{reference} (cannot read {target}: {exc.strerror or exc})")
                continue
        values[reference] = value
    if strict and missing:
        raise SecretError("cannot resolve secret references: " + "; ".join(missing))
    return values
