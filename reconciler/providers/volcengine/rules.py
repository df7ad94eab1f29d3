"""What the core knows of Volcengine: a task is addressed by the AppId, RoomId and TaskId it was
started with, and nothing of a running task's configuration changes in place (UpdateVoiceChat
only speaks, interrupts or calls functions), so every config change is a restart."""

from __future__ import annotations

from reconciler.core.providers import ProviderRules

RULES = ProviderRules(
    name="volcengine",
    identity_fields=("/AppId", "/RoomId", "/TaskId"),
    in_place_prefixes=(),
    noun="task",
    custom_llm_pointer="/Config/LLMConfig",
    max_announcement_chars=200,  # UpdateVoiceChat ExternalTextToSpeech's Message
    agent_and_targets=("/AgentConfig/UserId", "/AgentConfig/TargetUserId"),
)
