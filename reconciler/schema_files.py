"""Reading the JSON Schemas that ship with the package (top-level `schemas/` in the source)."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

PROVIDER_SCHEMAS = {"volcengine": "volcengine.schema.json"}
MANIFEST_SCHEMA = "manifest.schema.json"
PLAN_SCHEMA = "plan.schema.json"


@cache
def load_schema(filename: str) -> dict[str, Any]:
    text = resources.files("reconciler.schemas").joinpath(filename).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema
