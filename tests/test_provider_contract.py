"""Every provider against the emulator, held to the same contract (provider_contract.py)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from aliyun_helpers import emulator_kwargs, make_sessions
from aliyun_helpers import spec as aliyun_spec
from provider_contract import CONTRACT, Check, ProviderCase

from reconciler.emulator.server import EmulatorServer
from reconciler.providers.volcengine.client import VolcengineClient
from reconciler.providers.volcengine.sessions import VolcengineSessions

pytestmark = pytest.mark.anyio
VOLC_APP = "661e4b8f2f1d3c0123456789"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(**emulator_kwargs()) as server:
        yield server


def volcengine_spec(n: int) -> dict[str, Any]:
    return {
        "AppId": VOLC_APP,
        "RoomId": f"room-{n}",
        "TaskId": f"task-{n}",
        "Config": {"LLMConfig": {"Mode": "CustomLLM", "Url": "http://llm.example/v1"}},
        "AgentConfig": {"TargetUserId": [f"user-{n}"], "UserId": f"bot-{n}"},
    }


def volcengine_case(emulator: EmulatorServer) -> ProviderCase:
    kw = emulator_kwargs()

    def make() -> VolcengineSessions:
        return VolcengineSessions(
            VolcengineClient(
                emulator.url,
                "cn-north-1",
                "2024-12-01",
                kw["access_key_id"],
                kw["secret_access_key"],
            )
        )

    def identity(spec: Mapping[str, Any]) -> dict[str, str]:
        return {k: spec[k] for k in ("AppId", "RoomId", "TaskId")}

    return ProviderCase(
        name="volcengine",
        make=make,
        spec=volcengine_spec,
        identity=identity,
        scope=lambda spec: {"AppId": spec["AppId"]},
        live_count=lambda: len(emulator.tasks()),
    )


def aliyun_case(emulator: EmulatorServer) -> ProviderCase:
    def identity(spec: Mapping[str, Any]) -> dict[str, str]:
        runtime = spec["RuntimeConfig"]
        return {
            "AIAgentId": spec["AIAgentId"],
            "ChannelId": runtime["ChannelId"],
            "AgentUserId": runtime["AgentUserId"],
        }

    return ProviderCase(
        name="aliyun",
        make=lambda: make_sessions(emulator.url),
        spec=lambda n: aliyun_spec(f"channel-{n}", f"agent-{n}"),
        identity=identity,
        scope=lambda spec: {"AIAgentId": spec["AIAgentId"]},
        live_count=lambda: len(emulator.aliyun.live_instances()),
    )


CASES = {"volcengine": volcengine_case, "aliyun": aliyun_case}


def _runs() -> list[Any]:
    return [
        pytest.param(name, check, id=f"{name}-{check.__name__}")
        for name in sorted(CASES)
        for check in CONTRACT
    ]


@pytest.mark.parametrize(("provider_name", "check"), _runs())
async def test_contract(provider_name: str, check: Check, emulator: EmulatorServer) -> None:
    case = CASES[provider_name](emulator)
    provider = case.make()
    try:
        await check(provider, case)
    finally:
        await provider.aclose()
