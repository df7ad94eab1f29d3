"""The official Alibaba Cloud SDK (alibabacloud-ice20201109, a test-only dependency) drives the
emulator: proof that the emulator speaks the real wire, not just our own client's dialect."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from aliyun_helpers import AGENT, AK, SK, emulator_kwargs, token

from reconciler.emulator.server import EmulatorServer

ice = pytest.importorskip("alibabacloud_ice20201109")
from alibabacloud_ice20201109 import models as ice_models  # noqa: E402
from alibabacloud_ice20201109.client import Client  # noqa: E402
from alibabacloud_tea_openapi import models as openapi_models  # noqa: E402
from alibabacloud_tea_openapi.utils import Utils  # noqa: E402
from Tea.exceptions import TeaException  # noqa: E402


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(**emulator_kwargs()) as server:
        yield server


def sdk(emulator: EmulatorServer, secret: str = SK) -> Client:
    config = openapi_models.Config(
        access_key_id=AK,
        access_key_secret=secret,
        endpoint=f"{emulator.host}:{emulator.port}",
        protocol="HTTP",
        region_id="cn-shanghai",
    )
    return Client(config)


def start_request(channel: str = "ch-sdk", user: str = "agent-sdk") -> object:
    return ice_models.StartAIAgentInstanceRequest(
        aiagent_id=AGENT,
        runtime_config=ice_models.AIAgentRuntimeConfig(
            channel_id=channel, agent_user_id=user, auth_token=token(channel, user)
        ),
        agent_config=ice_models.AIAgentConfig(
            greeting="Hello there *friend*",
            tts_config=ice_models.AIAgentConfigTtsConfig(voice_id="zhixiaoxia"),
        ),
        user_data=json.dumps({"reconciler": {"lineage": "l", "session": "s", "attempt": "a"}}),
        session_id="chat-1",
    )


def test_the_sdk_drives_every_action(emulator: EmulatorServer) -> None:
    client = sdk(emulator)
    instance_id = client.start_aiagent_instance(start_request()).body.instance_id
    assert instance_id == emulator.aliyun.instances()[0]["InstanceId"]

    described = client.describe_aiagent_instance(
        ice_models.DescribeAIAgentInstanceRequest(instance_id=instance_id)
    ).body.instance
    assert described.status == "Created" and described.session_id == "chat-1"
    assert described.runtime_config.channel_id == "ch-sdk"
    assert described.agent_config.greeting == "Hello there *friend*"

    rows = client.list_aiagent_instance(
        ice_models.ListAIAgentInstanceRequest(aiagent_id=AGENT, page_number=1, page_size=100)
    ).body.instances
    assert [r.status for r in rows] == ["Created"]
    assert json.loads(rows[0].user_data)["reconciler"]["session"] == "s"

    client.update_aiagent_instance(
        ice_models.UpdateAIAgentInstanceRequest(
            instance_id=instance_id,
            agent_config=ice_models.AIAgentConfig(
                tts_config=ice_models.AIAgentConfigTtsConfig(voice_id="xiaoyun")
            ),
        )
    )
    client.send_aiagent_speech(
        ice_models.SendAIAgentSpeechRequest(
            instance_id=instance_id, text="We close at six.", enable_interrupt=True
        )
    )
    concurrency = client.get_aiagent_concurrency(
        ice_models.GetAIAgentConcurrencyRequest(aiagent_id=AGENT)
    )
    assert concurrency.body.active_count == 1
    client.stop_aiagent_instance(ice_models.StopAIAgentInstanceRequest(instance_id=instance_id))

    [stored] = emulator.aliyun.instances()
    assert stored["Status"] == "Finished"
    # (the SDK also sends its model's empty arrays, such as TtsConfig.PronunciationRules)
    assert stored["AgentConfig"]["TtsConfig"]["VoiceId"] == "xiaoyun"
    # Python's SDK writes booleans as str() does: "True"; the emulator reads any case.
    assert stored["Speeches"] == [{"Text": "We close at six.", "EnableInterrupt": "True"}]
    assert emulator.aliyun.calls()["by_outcome"] == {"ok": 7}


def test_a_replayed_nonce_is_refused(
    emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        Utils, "get_nonce", staticmethod(lambda: "5d41402abc4b2a76b9719d911017c592")
    )
    client = sdk(emulator)
    request = ice_models.GetAIAgentConcurrencyRequest(aiagent_id=AGENT)
    client.get_aiagent_concurrency(request)
    with pytest.raises(TeaException) as caught:
        client.get_aiagent_concurrency(request)
    assert caught.value.code == "SignatureNonceUsed"
    assert caught.value.data["statusCode"] == 400


def test_a_wrong_secret_is_refused(emulator: EmulatorServer) -> None:
    with pytest.raises(TeaException) as caught:
        sdk(emulator, secret="not-the-secret").start_aiagent_instance(start_request())
    assert caught.value.code == "SignatureDoesNotMatch"
    assert emulator.aliyun.instances() == []


def test_the_sdk_sees_throttling_as_the_emulator_sends_it(emulator: EmulatorServer) -> None:
    from reconciler.emulator.faults import Faults

    emulator.set_faults(Faults(error_429_rate=1.0, retry_after=2.0))
    with pytest.raises(TeaException) as caught:
        sdk(emulator).start_aiagent_instance(start_request())
    assert caught.value.code == "Throttling.User"
    assert caught.value.data["statusCode"] == 400
