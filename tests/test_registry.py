"""The registry: one consistent entry per cloud, and nothing cloud-specific elsewhere."""

from __future__ import annotations

import importlib
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
    for variable in ("VOLC_ACCESSKEY", "VOLC_SECRETKEY", "ALIBABA_CLOUD_ACCESS_KEY_ID"):
        monkeypatch.delenv(variable, raising=False)
    with pytest.raises(SettingsError, match="credentials are missing"):
        PROVIDERS[name].build(Settings(), 4)


# Words only a provider's own modules may use: the shared engine, planner and commands name no
# cloud's fields or codes.
VENDOR_WORDS = re.compile(r"FlowLimitExceeded|AUTH_ERROR_CODES|AppId/RoomId/TaskId|\"volcengine\"")
SHARED = ["reconciler/apply.py", "reconciler/apply_command.py", "reconciler/retrying.py"]
SHARED += [str(p.relative_to(REPO)) for p in (REPO / "reconciler" / "core").glob("*.py")]


@pytest.mark.parametrize("path", SHARED)
def test_shared_modules_hold_no_vendor_facts(path: str) -> None:
    text = (REPO / path).read_text(encoding="utf-8")
    assert not VENDOR_WORDS.findall(text), path
