"""Shared fixtures of the Alibaba Cloud tests: one emulator, credentials, tokens, specs."""

from __future__ import annotations

import time
from typing import Any

from reconciler.providers.aliyun.auth_token import make_auth_token
from reconciler.providers.aliyun.client import AliyunClient
from reconciler.providers.aliyun.sessions import AliyunSessions
from reconciler.settings import ArtcApp

AK = "LTAIemulatortest"
SK = "aliyun-test-secret"
ARTC = ArtcApp("artc-test-app", "artc-test-key")
AGENT = "39f8e0bc005e4f309379701645f4a1b2"
UNSUBSCRIBED = "0000000000000000000000000000dead"


def emulator_kwargs() -> dict[str, Any]:
    return {
        "access_key_id": AK,
        "secret_access_key": SK,
        "artc_app_id": ARTC.app_id,
        "artc_app_key": ARTC.app_key,
        "aliyun_agents": [AGENT, UNSUBSCRIBED],
        "aliyun_unsubscribed_agents": [UNSUBSCRIBED],
    }


def make_client(url: str, **kw: Any) -> AliyunClient:
    args: dict[str, Any] = {
        "endpoint": url,
        "access_key_id": AK,
        "access_key_secret": SK,
        "timeout": 5.0,
    }
    args.update(kw)
    return AliyunClient(**args)


def make_sessions(url: str, **kw: Any) -> AliyunSessions:
    return AliyunSessions(make_client(url, **kw), ARTC)


def token(channel: str, user: str, valid_for: int = 3600, app: ArtcApp = ARTC) -> str:
    return make_auth_token(app.app_id, app.app_key, channel, user, int(time.time()) + valid_for)


def start_params(channel: str = "ch-1", user: str = "agent-1", **extra: Any) -> dict[str, Any]:
    """StartAIAgentInstance parameters as the client takes them (nested objects as objects)."""
    return {
        "AIAgentId": AGENT,
        "RuntimeConfig": {
            "ChannelId": channel,
            "AgentUserId": user,
            "AuthToken": token(channel, user),
        },
        "AgentConfig": {"Greeting": "Hello *there*~ 你好", "TtsConfig": {"VoiceId": "zhixiaoxia"}},
        **extra,
    }


def spec(channel: str = "ch-1", user: str = "agent-1", **extra: Any) -> dict[str, Any]:
    """A declared aliyun spec: no AuthToken (the reconciler makes it)."""
    return {
        "AIAgentId": AGENT,
        "RuntimeConfig": {"ChannelId": channel, "AgentUserId": user},
        "AgentConfig": {"Greeting": "Hello!", "TtsConfig": {"VoiceId": "zhixiaoxia"}},
        "UserData": {"tenant": "acme"},
        **extra,
    }
