"""The compiled JSON Schemas: the single source of truth for what a valid file is.

Two engines read the same schemas. fastjsonschema (generated code) answers "valid or not" quickly
for the common case of a valid file; jsonschema then explains an invalid one, every error at once.
The corpus tests check that both give the same verdicts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import fastjsonschema
from jsonschema import Draft7Validator

from reconciler.core.normalize import SensitivePaths, sensitive_paths

FastCheck = Callable[[Any], Any]


@dataclass(frozen=True)
class SchemaSet:
    manifest: Mapping[str, Any]
    providers: Mapping[str, Mapping[str, Any]]
    manifest_validator: Draft7Validator
    provider_validators: Mapping[str, Draft7Validator]
    manifest_fast: FastCheck
    provider_fast: Mapping[str, FastCheck]
    sensitive: Mapping[str, SensitivePaths]

    def is_valid_fast(self, check: FastCheck, instance: Any) -> bool:
        try:
            check(instance)
        except fastjsonschema.JsonSchemaException:
            return False
        return True


def _fast(schema: Mapping[str, Any]) -> FastCheck:
    # `use_default=False`: validation must never change the document it checks.
    compiled: FastCheck = fastjsonschema.compile(dict(schema), use_default=False)
    return compiled


def build_schema_set(
    manifest: Mapping[str, Any], providers: Mapping[str, Mapping[str, Any]]
) -> SchemaSet:
    return SchemaSet(
        manifest=manifest,
        providers=providers,
        manifest_validator=Draft7Validator(manifest),
        provider_validators={name: Draft7Validator(schema) for name, schema in providers.items()},
        manifest_fast=_fast(manifest),
        provider_fast={name: _fast(schema) for name, schema in providers.items()},
        sensitive={name: sensitive_paths(schema) for name, schema in providers.items()},
    )
