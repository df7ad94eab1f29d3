"""The registry: one consistent entry per cloud, and nothing cloud-specific elsewhere."""

from __future__ import annotations

import importlib
import json
import os
import re
from pathlib import Path

import pytest

from reconciler.errors import SettingsError
from reconciler.providers.registry import PROVIDERS, provider_rules, schema_files
from reconciler.schema_files import load_schema
from reconciler.settings import Settings

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", list(PROVIDERS))
def test_each_entry_is_consistent(name: str) -> None:
    spec = PROVIDERS[name]
    assert spec.name == spec.rules.name == name
    assert load_schema(schema_files()[name])["type"] == "object"
    importlib.import_module(spec.emulator_api)
    assert provider_rules()[name] is spec.rules


@pytest.mark.parametrize("name", list(PROVIDERS))
def test_a_provider_without_credentials_is_refused_when_built(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in (
        "VOLC_ACCESSKEY",
        "VOLC_SECRETKEY",
        "ALIBABA_CLOUD_ACCESS_KEY_ID",
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
    ):
        monkeypatch.delenv(variable, raising=False)
    for variable in [v for v in os.environ if v.startswith("RECONCILER_")]:
        monkeypatch.delenv(variable)
    with pytest.raises(SettingsError, match="credentials are missing"):
        PROVIDERS[name].build(Settings(), 4)


def test_the_schemas_name_exactly_the_registered_providers() -> None:
    manifest = json.loads((REPO / "schemas" / "manifest.schema.json").read_text())
    assert manifest["definitions"]["provider"]["enum"] == list(PROVIDERS)
    plan = json.loads((REPO / "schemas" / "plan.schema.json").read_text())
    assert plan["definitions"]["action"]["properties"]["provider"]["enum"] == list(PROVIDERS)


# Words only a provider's own modules may use: the shared engine, planner and commands name no
# cloud's fields or codes.
VENDOR_WORDS = re.compile(r"FlowLimitExceeded|AUTH_ERROR_CODES|AppId/RoomId/TaskId|\"volcengine\"")
SHARED = [
    f"reconciler/{name}.py"
    for name in (
        "engine/applier",
        "engine/reconcile",
        "engine/results",
        "apply_command",
        "retrying",
        "refresh",
        "provider_pool",
        "core/plan",
        "core/outcome",
        "core/saved",
        "core/providers",
        "core/render",
        "core/state_listing",
    )
]


@pytest.mark.parametrize("path", SHARED)
def test_shared_modules_hold_no_vendor_facts(path: str) -> None:
    text = (REPO / path).read_text(encoding="utf-8")
    assert not VENDOR_WORDS.findall(text), path
