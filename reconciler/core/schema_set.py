"""The compiled JSON Schemas: the single source of truth for what a valid file is.

Two engines read the same schemas. jsonschema-rs (a validator compiled in Rust) answers "valid or
not" for the common case of a valid file, in microseconds and with a compilation that costs
about a millisecond; jsonschema, imported only then, explains an invalid one, every error at
once. Each schema is compiled when a document first needs it, so a directory that declares only
Volcengine sessions never compiles the Alibaba Cloud schema. tests/test_schema_parity.py checks
that both engines give the same verdicts (the corpus, the examples, generated documents, and
every pattern of the schemas at every code point).

A value the Rust engine cannot take (a string with a lone surrogate, from a JSON `\\ud800`
escape) gets its verdict from jsonschema instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import jsonschema_rs

from reconciler.core.normalize import SensitivePaths, sensitive_paths

if TYPE_CHECKING:
    from jsonschema import Draft7Validator

_MANIFEST = "\x00manifest"  # the cache key of the manifest schema; no provider is named so


def fast_validator(schema: Mapping[str, Any]) -> jsonschema_rs.Validator:
    """The compiled yes/no validator of one schema, configured as jsonschema's Draft7Validator
    is used here: `format` is an annotation, not checked (no format checker is given)."""
    return jsonschema_rs.Draft7Validator(dict(schema), validate_formats=False)


def explaining_validator(schema: Mapping[str, Any]) -> Draft7Validator:
    """jsonschema's validator of one schema, which names every error (imported only here)."""
    from jsonschema import Draft7Validator

    return Draft7Validator(schema)


class SchemaSet:
    """The manifest schema and each provider's spec schema, compiled on first use."""

    def __init__(
        self, manifest: Mapping[str, Any], providers: Mapping[str, Mapping[str, Any]]
    ) -> None:
        self.manifest = manifest
        self.providers = providers
        self._sensitive: Mapping[str, SensitivePaths] | None = None
        self._fast: dict[str, jsonschema_rs.Validator] = {}
        self._explaining: dict[str, Draft7Validator] = {}

    @property
    def sensitive(self) -> Mapping[str, SensitivePaths]:
        """Per provider, the paths of the fields marked `x-sensitive`."""
        if self._sensitive is None:
            self._sensitive = {name: sensitive_paths(s) for name, s in self.providers.items()}
        return self._sensitive

    def manifest_is_valid(self, instance: Any) -> bool:
        return self._is_valid(_MANIFEST, self.manifest, instance)

    def spec_is_valid(self, provider: str, instance: Any) -> bool:
        return self._is_valid(provider, self.providers[provider], instance)

    @property
    def manifest_validator(self) -> Draft7Validator:
        return self._explainer(_MANIFEST, self.manifest)

    def provider_validator(self, provider: str) -> Draft7Validator:
        return self._explainer(provider, self.providers[provider])

    def _is_valid(self, key: str, schema: Mapping[str, Any], instance: Any) -> bool:
        fast = self._fast.get(key)
        if fast is None:
            fast = self._fast[key] = fast_validator(schema)
        try:
            return bool(fast.is_valid(instance))
        except (ValueError, TypeError, OverflowError):  # a value Rust cannot take
            return bool(self._explainer(key, schema).is_valid(instance))

    def _explainer(self, key: str, schema: Mapping[str, Any]) -> Draft7Validator:
        found = self._explaining.get(key)
        if found is None:
            found = self._explaining[key] = explaining_validator(schema)
        return found


def build_schema_set(
    manifest: Mapping[str, Any], providers: Mapping[str, Mapping[str, Any]]
) -> SchemaSet:
    return SchemaSet(manifest, providers)
