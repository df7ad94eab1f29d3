"""Reading the JSON Schemas that ship with the package (top-level `schemas/` in the source)."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

MANIFEST_SCHEMA = "manifest.schema.json"
PLAN_SCHEMA = "plan.schema.json"


@cache
def load_schema(filename: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(_schema_file(filename).read_text(encoding="utf-8"))
    return schema


def schema_bytes(filename: str) -> bytes:
    """The schema file's bytes as shipped (for the digest of the build, see workspace.py)."""
    return _schema_file(filename).read_bytes()


def _schema_file(filename: str) -> Traversable:
    try:
        return resources.files("reconciler.schemas").joinpath(filename)
    except ModuleNotFoundError:
        # Imported from a source checkout rather than an installed package: the schemas sit
        # beside the package directory.
        return Path(__file__).resolve().parent.parent.joinpath("schemas", filename)
