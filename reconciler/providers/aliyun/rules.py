"""What the core knows of Alibaba Cloud AI agents.

An agent instance runs under (AIAgentId, RuntimeConfig.ChannelId, RuntimeConfig.AgentUserId): a
channel admits one user id once, so that triple is what a declared session stands for (the
InstanceId the cloud assigns is recorded, never declared). UpdateAIAgentInstance merges into the
running instance the fields its documentation lists; any other change is a Stop and a Start.
"""

from __future__ import annotations

from reconciler.core.providers import ProviderRules

RULES = ProviderRules(
    name="aliyun",
    identity_fields=("/AIAgentId", "/RuntimeConfig/ChannelId", "/RuntimeConfig/AgentUserId"),
    in_place_prefixes=(
        "/AgentConfig/TtsConfig/VoiceId",
        "/AgentConfig/InterruptConfig/EnableVoiceInterrupt",
        "/AgentConfig/Greeting",
        "/AgentConfig/Volume",
        "/AgentConfig/EnablePushToTalk",
        "/AgentConfig/VoiceprintConfig/UseVoiceprint",
        "/AgentConfig/LlmConfig/BailianAppParams",
    ),
    noun="instance",
    max_announcement_chars=1024,  # SendAIAgentSpeech's Text
)
