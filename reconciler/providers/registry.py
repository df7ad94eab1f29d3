"""The one registry of providers: every place that must know which clouds exist asks here.

Importing it imports only each provider's pure rules; a provider's client (httpx, signing) is
imported by its factory, the first time a run needs that provider. Shared modules name no cloud:
the engine, the planner and the commands take what they need from these entries.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from reconciler.core.providers import ProviderRules
from reconciler.providers.aliyun import rules as aliyun_rules
from reconciler.providers.base import ProviderSpec, Recovery, SessionProvider
from reconciler.providers.volcengine import rules as volcengine_rules

if TYPE_CHECKING:  # settings pull in pydantic: not needed to read the rules
    from reconciler.settings import Settings


def _volcengine(settings: Settings, max_connections: int) -> SessionProvider:
    from reconciler.providers.volcengine.sessions import VolcengineSessions

    return VolcengineSessions.from_settings(settings, max_connections=max_connections)


VOLCENGINE = ProviderSpec(
    name="volcengine",
    rules=volcengine_rules.RULES,
    schema_file="volcengine.schema.json",
    recovery=Recovery.RESEND,
    build=_volcengine,
    emulator_api="reconciler.emulator.volcengine",
)


def _aliyun(settings: Settings, max_connections: int) -> SessionProvider:
    from reconciler.providers.aliyun.sessions import AliyunSessions

    return AliyunSessions.from_settings(settings, max_connections=max_connections)


ALIYUN = ProviderSpec(
    name="aliyun",
    rules=aliyun_rules.RULES,
    schema_file="aliyun.schema.json",
    recovery=Recovery.RESTART_AND_LIST,
    build=_aliyun,
    emulator_api="reconciler.emulator.aliyun",
    observes=True,
    list_scope=("AIAgentId",),
)

PROVIDERS: Mapping[str, ProviderSpec] = {spec.name: spec for spec in (VOLCENGINE, ALIYUN)}


def provider_rules() -> dict[str, ProviderRules]:
    """Each provider's rules, as the core takes them."""
    return {name: spec.rules for name, spec in PROVIDERS.items()}


def schema_files() -> dict[str, str]:
    """Each provider's spec schema file (in schemas/)."""
    return {name: spec.schema_file for name, spec in PROVIDERS.items()}
