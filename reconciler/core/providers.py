"""What the core needs to know about each provider: how a task is identified and which spec
fields a running task can change in place (everything else needs a stop and a start)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ProviderRules:
    name: str
    identity_fields: tuple[str, ...]
    # JSON-pointer prefixes of spec fields a running task accepts in place. Volcengine has none:
    # UpdateVoiceChat does not change a running task's configuration.
    in_place_prefixes: tuple[str, ...] = ()

    def identity(self, spec: Mapping[str, Any]) -> str:
        return "/".join(str(spec.get(field, "")) for field in self.identity_fields)

    def identity_ids(self, spec: Mapping[str, Any]) -> dict[str, str]:
        return {field: str(spec.get(field, "")) for field in self.identity_fields}

    def updatable_in_place(self, pointer: str) -> bool:
        return any(
            pointer == prefix or pointer.startswith(prefix + "/")
            for prefix in self.in_place_prefixes
        )


VOLCENGINE = ProviderRules(name="volcengine", identity_fields=("AppId", "RoomId", "TaskId"))

RULES: Mapping[str, ProviderRules] = {VOLCENGINE.name: VOLCENGINE}
