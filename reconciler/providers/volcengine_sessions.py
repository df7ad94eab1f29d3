"""Volcengine as a SessionProvider: the wire client behind the apply engine's three verbs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from reconciler.core.model import Announcement
from reconciler.providers.volcengine import VolcengineClient
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

    async def start(self, spec: Mapping[str, Any]) -> None:
        await self.client.start(spec)

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
