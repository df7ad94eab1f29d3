"""Alibaba Cloud IMS AI agents as a SessionProvider and ObservingProvider.

The declared identity (AIAgentId, RuntimeConfig.ChannelId, RuntimeConfig.AgentUserId) does not
address an instance: the InstanceId Start returns does, so `start` hands it back to be
recorded. Start also makes the agent's AuthToken (never declared, never logged) and writes our
owner tag into UserData, which ListAIAgentInstance shows, so that the live instances a lost
Start left behind can be told apart.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from reconciler.core.model import Announcement
from reconciler.core.timestamps import utc_timestamp
from reconciler.errors import NotFound, Terminal, Transient
from reconciler.providers.aliyun.auth_token import DEFAULT_VALIDITY_SECONDS, make_auth_token
from reconciler.providers.aliyun.client import AliyunClient
from reconciler.providers.base import (
    OWNER_TAG_KEY,
    Liveness,
    LiveSession,
    Observation,
    Owner,
    SpecChange,
)
from reconciler.settings import ArtcApp, Settings, aliyun_credentials, artc_app

MAX_SPEECH = 1024
PAGE_SIZE = 100
MAX_PAGES = 100  # ListAIAgentInstance accepts PageNumber 1-100
FINISHED = "Finished"
RUNNING_STATUSES = frozenset({"Created", "Executing"})
HANGUP_REASONS = {0: "the agent hung up", 1: "the user hung up", 2: "the system ended the call"}
# Top-level parameters UpdateAIAgentInstance takes a partial object for.
_UPDATABLE = ("AgentConfig", "TemplateConfig")


class AliyunSessions:
    name = "aliyun"

    def __init__(
        self,
        client: AliyunClient,
        artc: ArtcApp,
        *,
        epoch_clock: Callable[[], float] = time.time,
        token_validity: int = DEFAULT_VALIDITY_SECONDS,
    ) -> None:
        self.client = client
        self._artc = artc
        self._epoch_clock = epoch_clock
        self._token_validity = token_validity

    @classmethod
    def from_settings(cls, settings: Settings, max_connections: int) -> AliyunSessions:
        credentials = aliyun_credentials(settings)
        ali = settings.aliyun
        artc = artc_app(settings)
        return cls(
            AliyunClient(
                endpoint=ali.resolved_endpoint,
                access_key_id=credentials.access_key_id,
                access_key_secret=credentials.access_key_secret,
                security_token=credentials.security_token,
                timeout=ali.timeout,
                max_connections=max_connections,
            ),
            artc,
        )

    async def start(self, spec: Mapping[str, Any], owner: Owner) -> Mapping[str, str]:
        runtime = dict(spec.get("RuntimeConfig") or {})
        channel, user = str(runtime.get("ChannelId", "")), str(runtime.get("AgentUserId", ""))
        expires_at = int(self._epoch_clock()) + self._token_validity
        runtime["AuthToken"] = make_auth_token(
            self._artc.app_id, self._artc.app_key, channel, user, expires_at
        )
        user_data = {**(spec.get("UserData") or {}), OWNER_TAG_KEY: owner.as_tag()}
        params = {**spec, "RuntimeConfig": runtime, "UserData": _compact(user_data)}
        return {"InstanceId": await self.client.start(params)}

    async def update(self, ids: Mapping[str, str], change: SpecChange) -> None:
        await self.client.update(ids["InstanceId"], update_params(change))

    async def announce(self, ids: Mapping[str, str], announcement: Announcement) -> None:
        if len(announcement.message) > MAX_SPEECH:
            raise Terminal(
                f"announcement {announcement.id!r} is {len(announcement.message)} characters; "
                f"SendAIAgentSpeech takes at most {MAX_SPEECH}"
            )
        # Volcengine's mode 1 ("interrupt whatever is being said") is the one that interrupts.
        await self.client.speak(
            ids["InstanceId"], announcement.message, announcement.interrupt_mode == 1
        )

    async def stop(self, ids: Mapping[str, str]) -> None:
        try:
            await self.client.stop(ids["InstanceId"])
        except NotFound as not_found:
            # The error for an unknown or finished instance is undocumented: believe it only
            # when Describe agrees.
            try:
                instance = await self.client.describe(ids["InstanceId"])
            except NotFound:
                raise not_found from None
            status = str(instance.get("Status", ""))
            if status == FINISHED:
                raise not_found from None
            raise Transient(
                f"StopAIAgentInstance said {not_found.code} but the instance is {status!r}",
                code=not_found.code,
                status=not_found.status,
            ) from None

    async def observe(self, ids: Mapping[str, str]) -> Observation:
        try:
            instance = await self.client.describe(ids["InstanceId"])
        except NotFound:
            return Observation(
                Liveness.ENDED, "", self._now(), reason="no longer known to the cloud"
            )
        return observation_of(instance, self._now())

    async def list_live(self, scope: Mapping[str, str]) -> Sequence[LiveSession]:
        agent_id = scope["AIAgentId"]
        live: list[LiveSession] = []
        for page in range(1, MAX_PAGES + 1):
            rows = await self.client.list_page(agent_id, page, PAGE_SIZE)
            live += [live_session(agent_id, row) for row in rows if row.get("Status") != FINISHED]
            if len(rows) < PAGE_SIZE:
                break
        return live

    async def aclose(self) -> None:
        await self.client.aclose()

    def _now(self) -> str:
        return utc_timestamp(self._epoch_clock())


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _pointer_tokens(pointer: str) -> list[str]:
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer.split("/")[1:]]


def update_params(change: SpecChange) -> dict[str, Any]:
    """UpdateAIAgentInstance parameters holding only the changed fields' new values, nested as
    in the spec (the cloud merges them). A removed field is sent as null; a change under a list
    sends the whole list."""
    params: dict[str, Any] = {}
    for pointer in change.changed:
        tokens = _pointer_tokens(pointer)
        if not tokens or tokens[0] not in _UPDATABLE:
            raise Terminal(f"aliyun cannot change {pointer} in place")
        source: Any = change.spec
        target = params
        for i, token in enumerate(tokens):
            last = i == len(tokens) - 1 or not isinstance(source.get(token), Mapping)
            if last:
                target[token] = source.get(token)
                break
            source = source[token]
            existing = target.get(token)
            target = existing if isinstance(existing, dict) else target.setdefault(token, {})
    return params


def observation_of(instance: Mapping[str, Any], observed_at: str) -> Observation:
    status = str(instance.get("Status", ""))
    if status in RUNNING_STATUSES:
        return Observation(Liveness.RUNNING, status, observed_at)
    if status == FINISHED:
        info = instance.get("CallInfo")
        info = info if isinstance(info, Mapping) else {}
        role = info.get("HangupRole")
        reason = HANGUP_REASONS.get(role, "it finished") if isinstance(role, int) else "it finished"
        ended = info.get("CallEndTime")
        return Observation(
            Liveness.ENDED,
            status,
            observed_at,
            ended_at=str(ended) if ended else None,
            reason=reason,
        )
    raise Transient(f"DescribeAIAgentInstance answered an unknown Status {status!r}")


def live_session(agent_id: str, row: Mapping[str, Any]) -> LiveSession:
    runtime = row.get("RuntimeConfig")
    runtime = runtime if isinstance(runtime, Mapping) else {}
    identity = {
        "AIAgentId": agent_id,
        "ChannelId": str(runtime.get("ChannelId", "")),
        "AgentUserId": str(runtime.get("AgentUserId", "")),
    }
    try:
        user_data = json.loads(str(row.get("UserData") or "null"))
    except json.JSONDecodeError:
        user_data = None
    tag = user_data.get(OWNER_TAG_KEY) if isinstance(user_data, Mapping) else None
    return LiveSession(identity, Owner.from_tag(tag), str(row.get("Status", "")))
