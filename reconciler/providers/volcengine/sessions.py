"""Volcengine as a SessionProvider: the wire client behind the apply engine's three verbs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from reconciler.core.model import Announcement
from reconciler.errors import Terminal
from reconciler.providers.base import Owner, SpecChange
from reconciler.providers.volcengine.client import VolcengineClient
from reconciler.settings import Settings, volcengine_credentials


class VolcengineSessions:
    name = "volcengine"

    def __init__(self, client: VolcengineClient) -> None:
        self.client = client

    @classmethod
    def from_settings(cls, settings: Settings, max_connections: int) -> VolcengineSessions:
        credentials = volcengine_credentials(settings)
        volc = settings.volcengine
        return cls(
            VolcengineClient(
                endpoint=volc.endpoint,
                region=volc.region,
                api_version=volc.api_version,
                access_key_id=credentials.access_key_id,
                secret_access_key=credentials.secret_access_key,
                session_token=credentials.session_token,
                timeout=volc.timeout,
                max_connections=max_connections,
            )
        )

    async def start(self, spec: Mapping[str, Any], owner: Owner) -> Mapping[str, str]:
        # The declared AppId/RoomId/TaskId address the task: nothing to record, and no place
        # for an owner tag is needed (a re-sent Start answers "already started").
        await self.client.start(spec)
        return {}

    async def update(self, ids: Mapping[str, str], change: SpecChange) -> None:
        # Volcengine declares no in-place fields (UpdateVoiceChat cannot change a running
        # task's configuration), so the plan never asks for this.
        raise Terminal(f"volcengine cannot change {', '.join(change.changed)} in place")

    async def stop(self, provider_ids: Mapping[str, str]) -> None:
        ids = provider_ids
        await self.client.stop(ids["AppId"], ids["RoomId"], ids["TaskId"])

    async def announce(self, provider_ids: Mapping[str, str], announcement: Announcement) -> None:
        await self.client.update(
            provider_ids["AppId"],
            provider_ids["RoomId"],
            provider_ids["TaskId"],
            "ExternalTextToSpeech",
            message=announcement.message,
            interrupt_mode=announcement.interrupt_mode,
        )

    async def aclose(self) -> None:
        await self.client.aclose()
