"""The Alibaba Cloud spec schema (schemas/aliyun.schema.json) against the seed's data types.

- the DESIGN example, the docs example and a spec using every field are valid;
- every range the seed gives holds at its edges, just inside and just outside;
- every object is closed, at every level, and a near miss gets a did-you-mean hint;
- AuthToken, TemplateConfig and UserData.reconciler are refused with their own message;
- jsonschema and the Rust validator (jsonschema-rs) agree on every document here and on
  generated ones.

Messages are produced the way reconciler/core/validate.py explains schema errors, plus the
schema's `x-message` (the message of a node, shown instead of the validator's own), which the
integration of the provider wires into validate.py.
"""

from __future__ import annotations

import copy
import json
import re
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.core.normalize import sensitive_paths
from reconciler.core.schema_set import fast_validator
from reconciler.core.secrets import escape_token
from reconciler.core.validate import _explain, _unknown_field

REPO = Path(__file__).resolve().parents[1]
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1


def _load() -> dict[str, Any]:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [key for key, _ in pairs]
        assert len(keys) == len(set(keys)), f"duplicate key in aliyun.schema.json: {keys}"
        return dict(pairs)

    text = (REPO / "schemas" / "aliyun.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text, object_pairs_hook=no_duplicates)
    return schema


SCHEMA = _load()
SLOW = jsonschema.Draft7Validator(SCHEMA)
FAST = fast_validator(SCHEMA)

# ---------------------------------------------------------------------------------------------
# documents

DESIGN_EXAMPLE: dict[str, Any] = {
    "AIAgentId": "39f8e0bc005e4f309379701645f4a1b2",
    "RuntimeConfig": {"ChannelId": "ch-front-desk-07", "AgentUserId": "agent-front-desk-07"},
    "AgentConfig": {
        "Greeting": "Hello!",
        "TtsConfig": {"VoiceId": "zhixiaoxia"},
        "LlmConfig": {"LlmSystemPrompt": "You are the front desk."},
    },
    "UserData": {"tenant": "acme"},
    "SessionId": "optional-chat-history-key",
}

FULL: dict[str, Any] = {
    "AIAgentId": "39f8e0bc005e4f309379701645f4a1b2",
    "RuntimeConfig": {"ChannelId": "ch-front-desk-07", "AgentUserId": "agent-front-desk-07"},
    "AgentConfig": {
        "Greeting": "Welcome to the front desk.",
        "WakeUpQuery": "Introduce yourself.",
        "MaxIdleTime": 600,
        "UserOnlineTimeout": 60,
        "UserOfflineTimeout": 5,
        "EnablePushToTalk": False,
        "GracefulShutdown": True,
        "Volume": 100,
        "WorkflowOverrideParams": {"node": {"threshold": 0.3}},
        "EnableIntelligentSegment": True,
        "AsrConfig": {
            "AsrLanguageId": "zh_mandarin",
            "AsrMaxSilence": 400,
            "AsrHotWords": ["前台", "check-in"],
            "VadLevel": 3,
            "VadDuration": 300,
            "CustomParams": "${env:ASR_PARAMS}",
        },
        "TtsConfig": {
            "VoiceId": "zhixiaoxia",
            "PronunciationRules": [
                {"Word": "重叠", "Pronunciation": "宠叠", "Type": "replacement"},
            ],
            "SpeechRate": 1.2,
            "LanguageId": "Chinese",
            "Emotion": "happy",
            "ModelId": "speech-02-turbo",
        },
        "LlmConfig": {
            "LlmSystemPrompt": "You are the front desk.",
            "LlmHistory": [
                {"Role": "user", "Content": "Hi."},
                {"Role": "assistant", "Content": "Hello, how can I help?"},
            ],
            "LlmHistoryLimit": 10,
            "BailianAppParams": {"biz_params": {"hotel": "acme"}},
            "OpenAIExtraQuery": "${env:LLM_QUERY}",
            "LlmCompleteReply": True,
        },
        "AvatarConfig": {"AvatarId": "avatar-01"},
        "InterruptConfig": {"EnableVoiceInterrupt": True, "InterruptWords": ["wait"]},
        "VoiceprintConfig": {"UseVoiceprint": True, "VoiceprintId": "vp-0001"},
        "TurnDetectionConfig": {
            "Mode": "Semantic",
            "SemanticWaitDuration": 800,
            "TurnEndWords": ["over"],
        },
        "ExperimentalConfig": {"feature": True},
        "VcrConfig": {
            "StillFrameMotion": {"Enabled": True, "CallbackDelay": 3000},
            "InvalidFrameMotion": {"Enabled": False, "CallbackDelay": 200},
            "PeopleCount": {"Enabled": True},
            "Equipment": {"Enabled": False},
            "HeadMotion": {"Enabled": True},
        },
    },
    "UserData": {"tenant": "acme", "shift": ["day", "night"]},
    "SessionId": "chat-session-0001",
    "ChatSyncConfig": {"IMAIAgentId": "im-agent-01", "ReceiverId": "guest-07"},
}

# The AICallAgentConfig of the seed and its sub-configs, in the server's PascalCase (aliyun.md),
# plus the rest of the StartAIAgentInstance request: every leaf the schema must know.
EVERY_FIELD = {
    "/AIAgentId",
    "/RuntimeConfig/ChannelId",
    "/RuntimeConfig/AgentUserId",
    "/RuntimeConfig/AuthToken",
    "/UserData",
    "/UserData/reconciler",
    "/SessionId",
    "/ChatSyncConfig/IMAIAgentId",
    "/ChatSyncConfig/ReceiverId",
    "/TemplateConfig",
    "/AgentConfig/Greeting",
    "/AgentConfig/WakeUpQuery",
    "/AgentConfig/MaxIdleTime",
    "/AgentConfig/UserOnlineTimeout",
    "/AgentConfig/UserOfflineTimeout",
    "/AgentConfig/EnablePushToTalk",
    "/AgentConfig/GracefulShutdown",
    "/AgentConfig/Volume",
    "/AgentConfig/WorkflowOverrideParams",
    "/AgentConfig/EnableIntelligentSegment",
    "/AgentConfig/ExperimentalConfig",
    "/AgentConfig/AsrConfig/AsrLanguageId",
    "/AgentConfig/AsrConfig/AsrMaxSilence",
    "/AgentConfig/AsrConfig/AsrHotWords",
    "/AgentConfig/AsrConfig/VadLevel",
    "/AgentConfig/AsrConfig/VadDuration",
    "/AgentConfig/AsrConfig/CustomParams",
    "/AgentConfig/TtsConfig/VoiceId",
    "/AgentConfig/TtsConfig/SpeechRate",
    "/AgentConfig/TtsConfig/LanguageId",
    "/AgentConfig/TtsConfig/Emotion",
    "/AgentConfig/TtsConfig/ModelId",
    "/AgentConfig/TtsConfig/PronunciationRules",
    "/AgentConfig/TtsConfig/PronunciationRules/*/Word",
    "/AgentConfig/TtsConfig/PronunciationRules/*/Pronunciation",
    "/AgentConfig/TtsConfig/PronunciationRules/*/Type",
    "/AgentConfig/LlmConfig/LlmSystemPrompt",
    "/AgentConfig/LlmConfig/LlmHistory",
    "/AgentConfig/LlmConfig/LlmHistory/*/Role",
    "/AgentConfig/LlmConfig/LlmHistory/*/Content",
    "/AgentConfig/LlmConfig/LlmHistoryLimit",
    "/AgentConfig/LlmConfig/BailianAppParams",
    "/AgentConfig/LlmConfig/OpenAIExtraQuery",
    "/AgentConfig/LlmConfig/LlmCompleteReply",
    "/AgentConfig/AvatarConfig/AvatarId",
    "/AgentConfig/InterruptConfig/EnableVoiceInterrupt",
    "/AgentConfig/InterruptConfig/InterruptWords",
    "/AgentConfig/VoiceprintConfig/UseVoiceprint",
    "/AgentConfig/VoiceprintConfig/VoiceprintId",
    "/AgentConfig/TurnDetectionConfig/Mode",
    "/AgentConfig/TurnDetectionConfig/SemanticWaitDuration",
    "/AgentConfig/TurnDetectionConfig/TurnEndWords",
    *(
        f"/AgentConfig/VcrConfig/{name}/{field}"
        for name in ("StillFrameMotion", "InvalidFrameMotion")
        for field in ("Enabled", "CallbackDelay")
    ),
    *(
        f"/AgentConfig/VcrConfig/{name}/Enabled"
        for name in ("PeopleCount", "Equipment", "HeadMotion")
    ),
}

# Fields that refuse any value; each carries the message that says why.
REFUSED = {"/RuntimeConfig/AuthToken", "/UserData/reconciler", "/TemplateConfig"}

# What UpdateAIAgentInstance changes in place (aliyun.md); everything else restarts the agent.
IN_PLACE = {
    "/AgentConfig/TtsConfig/VoiceId",
    "/AgentConfig/InterruptConfig/EnableVoiceInterrupt",
    "/AgentConfig/Greeting",
    "/AgentConfig/Volume",
    "/AgentConfig/EnablePushToTalk",
    "/AgentConfig/VoiceprintConfig/UseVoiceprint",
    "/AgentConfig/LlmConfig/BailianAppParams",
}

# Objects deliberately open: the user's own data, or JSON passed through unchecked.
OPEN_OBJECTS = {
    "/UserData",
    "/AgentConfig/WorkflowOverrideParams",
    "/AgentConfig/ExperimentalConfig",
    "/AgentConfig/LlmConfig/BailianAppParams",
}

SENSITIVE = {"/AgentConfig/AsrConfig/CustomParams", "/AgentConfig/LlmConfig/OpenAIExtraQuery"}


# ---------------------------------------------------------------------------------------------
# helpers


def explain(spec: Any) -> list[tuple[str, str]]:
    """(pointer, message) for every problem, as validate.py reports them once x-message is wired."""
    problems: list[tuple[str, str]] = []
    for error in SLOW.iter_errors(spec):
        node = error.schema
        if isinstance(node, dict) and isinstance(node.get("x-message"), str):
            pointer = "".join(f"/{escape_token(str(token))}" for token in error.absolute_path)
            problems.append((pointer, node["x-message"]))
        else:
            problems.extend(_explain(error))
    return sorted(problems)


def fast_verdict(instance: Any) -> bool:
    return bool(FAST.is_valid(instance))


def verdict(instance: Any) -> bool:
    """The verdict of both engines, which must agree."""
    slow = SLOW.is_valid(instance)
    assert fast_verdict(instance) == slow, json.dumps(instance, ensure_ascii=False)[:500]
    return slow


def tokens(pointer: str) -> list[str]:
    return pointer.strip("/").split("/") if pointer.strip("/") else []


def with_value(pointer: str, value: Any, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """A copy of the full spec (or base) with the value at pointer, parents made as needed."""
    spec = copy.deepcopy(FULL if base is None else base)
    *parents, last = tokens(pointer)
    node: Any = spec
    for token in parents:
        node = node[int(token)] if isinstance(node, list) else node.setdefault(token, {})
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return spec


def without(pointer: str, base: dict[str, Any] | None = None) -> dict[str, Any]:
    spec = copy.deepcopy(FULL if base is None else base)
    *parents, last = tokens(pointer)
    node: Any = spec
    for token in parents:
        node = node[int(token)] if isinstance(node, list) else node[token]
    del node[last]
    return spec


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = SCHEMA["definitions"][node["$ref"].rsplit("/", 1)[1]]
    return node


def schema_fields(
    node: dict[str, Any] | None = None, pointer: str = ""
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(pointer with * for array items, resolved schema) of every declared property."""
    node = resolve(SCHEMA if node is None else node)
    for name, child in node.get("properties", {}).items():
        child = resolve(child)
        yield f"{pointer}/{name}", child
        yield from schema_fields(child, f"{pointer}/{name}")
    items = node.get("items")
    if isinstance(items, dict):
        yield from schema_fields(items, f"{pointer}/*")


DECLARED = dict(schema_fields())


def field_schema(pointer: str) -> dict[str, Any]:
    """The resolved schema of one declared property (array items written as *)."""
    return DECLARED[pointer]


def spec_pointers(value: Any, pointer: str = "") -> Iterator[str]:
    """Every pointer of a document, array indexes written as *."""
    if isinstance(value, dict):
        for key, child in value.items():
            yield f"{pointer}/{key}"
            yield from spec_pointers(child, f"{pointer}/{key}")
    elif isinstance(value, list):
        for child in value:
            yield from spec_pointers(child, f"{pointer}/*")


def closed_objects(value: Any, node: dict[str, Any], pointer: str = "") -> Iterator[str]:
    """The concrete pointers of the closed objects a document walks through, along the schema."""
    node = resolve(node)
    if isinstance(value, dict) and node.get("additionalProperties") is False:
        yield pointer
    if isinstance(value, dict):
        for key, child in value.items():
            if key in node.get("properties", {}):
                yield from closed_objects(child, node["properties"][key], f"{pointer}/{key}")
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        for index, child in enumerate(value):
            yield from closed_objects(child, node["items"], f"{pointer}/{index}")


# ---------------------------------------------------------------------------------------------
# valid documents


def test_design_example_is_valid() -> None:
    assert verdict(DESIGN_EXAMPLE)
    assert explain(DESIGN_EXAMPLE) == []


def test_full_spec_using_every_field_is_valid() -> None:
    assert verdict(FULL)
    assert explain(FULL) == []


def test_the_full_spec_uses_every_field_and_the_schema_knows_every_seed_field() -> None:
    declared = {p for p, n in schema_fields() if "properties" not in n or p in OPEN_OBJECTS}
    open_inside = tuple(f"{pointer}/" for pointer in OPEN_OBJECTS)
    used = {p for p in spec_pointers(FULL) if not p.startswith(open_inside)}
    assert declared == EVERY_FIELD
    assert declared - used == REFUSED


def test_minimal_spec_is_valid_and_its_required_fields_are_required() -> None:
    minimal = {k: DESIGN_EXAMPLE[k] for k in ("AIAgentId", "RuntimeConfig")}
    assert verdict(minimal)
    for pointer in ("/AIAgentId", "/RuntimeConfig", "/RuntimeConfig/ChannelId"):
        spec = without(pointer, minimal)
        assert not verdict(spec)
        assert explain(spec) == [(pointer, f'missing required field "{tokens(pointer)[-1]}"')]
    spec = without("/RuntimeConfig/AgentUserId", minimal)
    assert explain(spec) == [("/RuntimeConfig/AgentUserId", 'missing required field "AgentUserId"')]


def test_docs_examples_are_valid() -> None:
    text = (REPO / "docs" / "aliyun-spec.md").read_text("utf-8")
    blocks = [json.loads(b) for b in re.findall(r"```json\n(.*?)```", text, flags=re.DOTALL)]
    specs = [block["spec"] for block in blocks if isinstance(block, dict) and "spec" in block]
    assert specs
    for spec in specs:
        assert verdict(spec), explain(spec)


# ---------------------------------------------------------------------------------------------
# the seed's ranges, at their edges

RANGE_EDGES: list[tuple[str, Any, bool]] = [
    ("/AgentConfig/Greeting", "x" * 100, True),
    ("/AgentConfig/Greeting", "你" * 100, True),
    ("/AgentConfig/Greeting", "x" * 101, False),
    ("/AgentConfig/Greeting", "", True),
    ("/AgentConfig/Volume", 0, True),
    ("/AgentConfig/Volume", 400, True),
    ("/AgentConfig/Volume", -1, False),
    ("/AgentConfig/Volume", 401, False),
    ("/AgentConfig/Volume", 100.5, False),
    ("/AgentConfig/AsrConfig/AsrMaxSilence", 200, True),
    ("/AgentConfig/AsrConfig/AsrMaxSilence", 1200, True),
    ("/AgentConfig/AsrConfig/AsrMaxSilence", 199, False),
    ("/AgentConfig/AsrConfig/AsrMaxSilence", 1201, False),
    ("/AgentConfig/AsrConfig/VadLevel", 0, True),
    ("/AgentConfig/AsrConfig/VadLevel", 10, True),
    ("/AgentConfig/AsrConfig/VadLevel", -1, False),
    ("/AgentConfig/AsrConfig/VadLevel", 11, False),
    ("/AgentConfig/AsrConfig/VadDuration", 0, True),
    ("/AgentConfig/AsrConfig/VadDuration", 200, True),
    ("/AgentConfig/AsrConfig/VadDuration", 2000, True),
    ("/AgentConfig/AsrConfig/VadDuration", -1, False),
    ("/AgentConfig/AsrConfig/VadDuration", 1, False),
    ("/AgentConfig/AsrConfig/VadDuration", 199, False),
    ("/AgentConfig/AsrConfig/VadDuration", 2001, False),
    ("/AgentConfig/AsrConfig/AsrHotWords", ["w"] * 500, True),
    ("/AgentConfig/AsrConfig/AsrHotWords", ["w"] * 501, False),
    ("/AgentConfig/AsrConfig/AsrHotWords", [], True),
    ("/AgentConfig/AsrConfig/AsrHotWords/0", "x" * 10, True),
    ("/AgentConfig/AsrConfig/AsrHotWords/0", "热" * 10, True),
    ("/AgentConfig/AsrConfig/AsrHotWords/0", "x" * 11, False),
    ("/AgentConfig/AsrConfig/AsrHotWords/0", "", False),
    ("/AgentConfig/TtsConfig/SpeechRate", 0.5, True),
    ("/AgentConfig/TtsConfig/SpeechRate", 2.0, True),
    ("/AgentConfig/TtsConfig/SpeechRate", 1, True),
    ("/AgentConfig/TtsConfig/SpeechRate", 0.49, False),
    ("/AgentConfig/TtsConfig/SpeechRate", 2.01, False),
    ("/AgentConfig/TtsConfig/SpeechRate", -1, False),
    (
        "/AgentConfig/TtsConfig/PronunciationRules",
        [{"Word": "行动", "Pronunciation": "航动", "Type": "replacement"}] * 20,
        True,
    ),
    (
        "/AgentConfig/TtsConfig/PronunciationRules",
        [{"Word": "行动", "Pronunciation": "航动", "Type": "replacement"}] * 21,
        False,
    ),
    ("/AgentConfig/TtsConfig/PronunciationRules/0/Word", "一二三四五六七八九", True),
    ("/AgentConfig/TtsConfig/PronunciationRules/0/Word", "一二三四五六七八九十", False),
    ("/AgentConfig/TtsConfig/PronunciationRules/0/Word", "重 叠", False),
    ("/AgentConfig/TtsConfig/PronunciationRules/0/Pronunciation", "", False),
    ("/AgentConfig/TtsConfig/PronunciationRules/0/Pronunciation", "宠叠\n", False),
    ("/AgentConfig/TtsConfig/PronunciationRules/0/Type", "replace", False),
    ("/AgentConfig/TurnDetectionConfig/Mode", "Normal", True),
    ("/AgentConfig/TurnDetectionConfig/Mode", "Semantic", True),
    ("/AgentConfig/TurnDetectionConfig/Mode", "semantic", False),
    ("/AgentConfig/TurnDetectionConfig/Mode", "Auto", False),
    ("/AgentConfig/TurnDetectionConfig/SemanticWaitDuration", -1, True),
    ("/AgentConfig/TurnDetectionConfig/SemanticWaitDuration", 0, True),
    ("/AgentConfig/TurnDetectionConfig/SemanticWaitDuration", 10000, True),
    ("/AgentConfig/TurnDetectionConfig/SemanticWaitDuration", -2, False),
    ("/AgentConfig/TurnDetectionConfig/SemanticWaitDuration", 10001, False),
    ("/AgentConfig/TtsConfig/ModelId", "speech-01-turbo", True),
    ("/AgentConfig/TtsConfig/ModelId", "speech-02-turbo", True),
    ("/AgentConfig/TtsConfig/ModelId", "speech-02-hd", False),
    ("/AgentConfig/LlmConfig/LlmHistory/0/Role", "system", True),
    ("/AgentConfig/LlmConfig/LlmHistory/0/Role", "bot", False),
    ("/AgentConfig/VcrConfig/StillFrameMotion/CallbackDelay", 200, True),
    ("/AgentConfig/VcrConfig/StillFrameMotion/CallbackDelay", 5000, True),
    ("/AgentConfig/VcrConfig/StillFrameMotion/CallbackDelay", 199, False),
    ("/AgentConfig/VcrConfig/InvalidFrameMotion/CallbackDelay", 5001, False),
    ("/RuntimeConfig/ChannelId", "c" * 64, True),
    ("/RuntimeConfig/ChannelId", "c" * 65, False),
    ("/RuntimeConfig/ChannelId", "", False),
    ("/RuntimeConfig/ChannelId", "ch 07", False),
    ("/RuntimeConfig/ChannelId", "ch-07\n", False),
    ("/RuntimeConfig/AgentUserId", "agent_07-A", True),
    ("/RuntimeConfig/AgentUserId", "agent.07", False),
    ("/AIAgentId", "a" * 64, True),
    ("/AIAgentId", "a" * 65, False),
    ("/SessionId", "s" * 128, True),
    ("/SessionId", "s" * 129, False),
    ("/SessionId", "", False),
    ("/AgentConfig/LlmConfig/LlmHistory", [{"Role": "user", "Content": "Hi."}] * 100, True),
    ("/AgentConfig/LlmConfig/LlmHistory", [{"Role": "user", "Content": "Hi."}] * 101, False),
]
for _field in (
    "MaxIdleTime",
    "UserOnlineTimeout",
    "UserOfflineTimeout",
    "LlmConfig/LlmHistoryLimit",
):
    RANGE_EDGES += [
        (f"/AgentConfig/{_field}", 0, True),
        (f"/AgentConfig/{_field}", INT32_MAX, True),
        (f"/AgentConfig/{_field}", -1, False),
        (f"/AgentConfig/{_field}", INT32_MAX + 1, False),
        (f"/AgentConfig/{_field}", 2**64, False),
        (f"/AgentConfig/{_field}", "600", False),
    ]


@pytest.mark.parametrize(
    "pointer,value,valid",
    RANGE_EDGES,
    ids=[f"{p.rsplit('/', 1)[-1]}={str(v)[:16]}" for p, v, _ in RANGE_EDGES],
)
def test_range_edge(pointer: str, value: Any, valid: bool) -> None:
    spec = with_value(pointer, value)
    assert verdict(spec) is valid
    problems = explain(spec)
    if valid:
        assert problems == []
    else:
        assert problems and all(found.startswith(pointer) for found, _ in problems), problems


def test_vad_duration_out_of_range_says_what_is_allowed() -> None:
    spec = with_value("/AgentConfig/AsrConfig/VadDuration", 150)
    assert explain(spec) == [
        (
            "/AgentConfig/AsrConfig/VadDuration",
            "must be 0 (off) or an integer from 200 to 2000 milliseconds",
        )
    ]


def test_chat_sync_config_needs_a_session_id_and_both_its_ids() -> None:
    assert not verdict(without("/SessionId"))
    assert explain(without("/SessionId")) == [
        ("", "'SessionId' is a dependency of 'ChatSyncConfig'")
    ]
    spec = without("/ChatSyncConfig/ReceiverId")
    assert explain(spec) == [("/ChatSyncConfig/ReceiverId", 'missing required field "ReceiverId"')]
    assert verdict(without("/ChatSyncConfig"))  # SessionId alone keys the chat history


def _bounded_nodes() -> list[tuple[str, dict[str, Any]]]:
    return [
        (pointer, node)
        for pointer, node in schema_fields()
        if node.get("type") in ("string", "integer", "number", "array")
    ]


def test_every_integer_is_bounded_to_64_bits_at_most() -> None:
    integers = [(p, n) for p, n in _bounded_nodes() if n.get("type") == "integer"]
    assert len(integers) == 11
    for pointer, node in integers:
        low, high = node.get("minimum"), node.get("maximum")
        if "anyOf" in node:  # VadDuration: 0, or a range
            low = min(b.get("minimum", b.get("const")) for b in node["anyOf"])
            high = max(b.get("maximum", b.get("const")) for b in node["anyOf"])
        assert isinstance(low, int) and isinstance(high, int), pointer
        assert -INT64_MAX - 1 <= low <= high <= INT64_MAX, pointer


def test_every_string_and_array_is_bounded() -> None:
    """A string is either an enum, an anchored pattern, capped, or sensitive (any reference)."""
    for pointer, node in _bounded_nodes():
        if node["type"] == "string":
            capped = "maxLength" in node or "enum" in node or "pattern" in node
            assert capped or node.get("x-sensitive") is True, pointer
            assert "pattern" not in node or node["pattern"].endswith("$(?![\\s\\S])"), pointer
        if node["type"] == "array":
            assert "maxItems" in node, pointer
            item = resolve(node["items"])
            assert "maxLength" in item or item.get("type") == "object", pointer


def _length_edges() -> list[tuple[str, Any, bool]]:
    """Every cap of this schema, at its edge: derived, so each cap is known to be enforced."""
    edges: list[tuple[str, Any, bool]] = []
    for pointer, node in _bounded_nodes():
        concrete = pointer.replace("*", "0")
        if node["type"] == "string" and "maxLength" in node:
            cap = node["maxLength"]
            edges += [(concrete, "a" * cap, True), (concrete, "a" * (cap + 1), False)]
        if node["type"] == "array" and isinstance(resolve(node["items"]).get("maxLength"), int):
            cap = node["maxItems"]
            edges += [(concrete, ["w"] * cap, True), (concrete, ["w"] * (cap + 1), False)]
    return edges


@pytest.mark.parametrize("pointer,value,valid", _length_edges())
def test_length_cap_edge(pointer: str, value: Any, valid: bool) -> None:
    assert verdict(with_value(pointer, value)) is valid


# ---------------------------------------------------------------------------------------------
# unknown fields, refused fields

CLOSED_LEVELS = sorted(closed_objects(FULL, SCHEMA))


def test_the_closed_levels_are_the_ones_expected() -> None:
    vcr = ("StillFrameMotion", "InvalidFrameMotion", "PeopleCount", "Equipment", "HeadMotion")
    expected = [
        "",
        "/RuntimeConfig",
        "/ChatSyncConfig",
        "/AgentConfig",
        *(
            f"/AgentConfig/{name}"
            for name in (
                "AsrConfig",
                "TtsConfig",
                "LlmConfig",
                "AvatarConfig",
                "InterruptConfig",
                "VoiceprintConfig",
                "TurnDetectionConfig",
                "VcrConfig",
            )
        ),
        "/AgentConfig/TtsConfig/PronunciationRules/0",
        "/AgentConfig/LlmConfig/LlmHistory/0",
        "/AgentConfig/LlmConfig/LlmHistory/1",
        *(f"/AgentConfig/VcrConfig/{name}" for name in vcr),
    ]
    found = CLOSED_LEVELS
    assert found == sorted(expected)


@pytest.mark.parametrize("level", CLOSED_LEVELS)
def test_unknown_field_is_rejected_at_every_level(level: str) -> None:
    spec = with_value(f"{level}/Zzyzx", 1)
    assert not verdict(spec)
    assert explain(spec) == [(f"{level}/Zzyzx", 'unknown field "Zzyzx"')]


def test_every_object_is_closed_or_deliberately_open() -> None:
    objects = {p for p, n in schema_fields() if n.get("type") == "object"}
    opened = {
        p for p in objects if resolve(field_schema(p)).get("additionalProperties") is not False
    }
    assert opened == OPEN_OBJECTS
    for pointer in OPEN_OBJECTS - {"/UserData"}:  # JSON objects, passed through as they are
        assert verdict(with_value(pointer, {"Any": [1, {"thing": None}]}))
        assert not verdict(with_value(pointer, '{"as": "a string"}'))


NEAR_MISSES = [
    ("/AgentConfig/Greting", "Greeting"),
    ("/AgentConfig/greeting", "Greeting"),
    ("/AgentConfig/LLMConfig", "LlmConfig"),
    ("/AgentConfig/TTSConfig", "TtsConfig"),
    ("/AgentConfig/ASRConfig", "AsrConfig"),
    ("/AgentConfig/AsrConfig/VadLevl", "VadLevel"),
    ("/AgentConfig/TtsConfig/VoiceID", "VoiceId"),
    ("/AgentConfig/LlmConfig/LlmSystemPromt", "LlmSystemPrompt"),
    ("/AgentConfig/TurnDetectionConfig/Mod", "Mode"),
    ("/AgentConfig/VcrConfig/PeopleCount/Enable", "Enabled"),
    ("/RuntimeConfig/ChanelId", "ChannelId"),
    ("/AIAgentID", "AIAgentId"),
    ("/ChatSyncConfig/ReceiverID", "ReceiverId"),
]


@pytest.mark.parametrize("pointer,meant", NEAR_MISSES)
def test_near_miss_gets_a_did_you_mean_hint(pointer: str, meant: str) -> None:
    spec = with_value(pointer, True)
    key = tokens(pointer)[-1]
    message = f'unknown field "{key}" (did you mean "{meant}"?)'
    assert not verdict(spec)
    assert (pointer, message) in explain(spec)
    siblings = [p for p, _ in schema_fields() if p.rsplit("/", 1)[0] == pointer.rsplit("/", 1)[0]]
    assert _unknown_field(key, [p.rsplit("/", 1)[-1] for p in siblings]) == message


AUTH_TOKEN_MESSAGE = (
    "AuthToken is made by the reconciler at Start from the ARTC app ID and app key settings "
    "(RECONCILER_ALIYUN__ARTC_APP_ID, RECONCILER_ALIYUN__ARTC_APP_KEY); do not declare it"
)
RESERVED_MESSAGE = (
    'the UserData key "reconciler" is reserved: the reconciler writes its ownership tag there'
)
TEMPLATE_MESSAGE = "TemplateConfig is deprecated: declare these settings in AgentConfig"

REFUSALS = [
    ("/RuntimeConfig/AuthToken", "eyJhcHBpZCI6...", AUTH_TOKEN_MESSAGE),
    ("/RuntimeConfig/AuthToken", "${env:ARTC_TOKEN}", AUTH_TOKEN_MESSAGE),
    ("/RuntimeConfig/AuthToken", "", AUTH_TOKEN_MESSAGE),
    ("/UserData/reconciler", {"lineage": "mine"}, RESERVED_MESSAGE),
    ("/UserData/reconciler", None, RESERVED_MESSAGE),
    ("/TemplateConfig", {"VoiceChat": {"Greeting": "Hi"}}, TEMPLATE_MESSAGE),
    ("/TemplateConfig", {}, TEMPLATE_MESSAGE),
]


@pytest.mark.parametrize("pointer,value,message", REFUSALS)
def test_refused_field_says_why(pointer: str, value: Any, message: str) -> None:
    spec = with_value(pointer, value)
    assert not verdict(spec)
    assert explain(spec) == [(pointer, message)]


def test_every_field_is_described() -> None:
    assert SCHEMA["title"] and SCHEMA["description"]
    assert [p for p, node in schema_fields() if not node.get("description")] == []
    for name, node in SCHEMA["definitions"].items():
        assert node.get("description"), name


def test_refused_fields_are_exactly_the_documented_ones() -> None:
    refused = {p for p, n in schema_fields() if n.get("not") == {}}
    assert refused == REFUSED
    assert all(isinstance(field_schema(p).get("x-message"), str) for p in refused)


def test_the_deprecated_nested_runtime_config_is_unknown() -> None:
    spec = with_value("/RuntimeConfig/VoiceChat", {"AgentUserId": "a", "ChannelId": "c"})
    assert not verdict(spec)
    assert explain(spec) == [("/RuntimeConfig/VoiceChat", 'unknown field "VoiceChat"')]


def test_user_data_must_be_an_object() -> None:
    spec = with_value("/UserData", '{"tenant": "acme"}')
    assert not verdict(spec)
    assert explain(spec) == [("/UserData", '"{\\"tenant\\": \\"acme\\"}" is not of type "object"')]


# ---------------------------------------------------------------------------------------------
# secret references and sensitive fields


def test_sensitive_fields_are_marked_plain_and_found_by_the_redactor() -> None:
    marked = {p for p, n in schema_fields() if n.get("x-sensitive") is True}
    assert marked == SENSITIVE
    for pointer in marked:
        node = field_schema(pointer)
        assert node["type"] == "string"
        assert not {"pattern", "enum", "const", "format", "minLength", "maxLength"} & set(node)
    redacted = {"/" + "/".join(path) for path in sensitive_paths(SCHEMA)}
    assert redacted == SENSITIVE


@pytest.mark.parametrize(
    "pointer",
    [
        "/AgentConfig/Greeting",
        "/AgentConfig/TtsConfig/ModelId",
        "/AgentConfig/TurnDetectionConfig/Mode",
        "/AgentConfig/AsrConfig/AsrHotWords/0",
        "/AgentConfig/TtsConfig/PronunciationRules/0/Word",
        "/AgentConfig/LlmConfig/LlmSystemPrompt",
    ],
)
def test_a_secret_reference_passes_content_checks(pointer: str) -> None:
    """Its content is unknown until apply; validate.py skips content keywords for references."""
    spec = with_value(pointer, "${env:A_RATHER_LONG_VARIABLE_NAME_FOR_THIS}")
    verdict(spec)  # the engines agree on the raw schema; the content rules are skipped after
    assert explain(spec) == []


def test_a_reference_is_still_held_to_its_type() -> None:
    spec = with_value("/AgentConfig/Volume", "${env:VOLUME}")
    assert not verdict(spec)
    assert explain(spec) == [("/AgentConfig/Volume", '"${env:VOLUME}" is not of type "integer"')]


# ---------------------------------------------------------------------------------------------
# what is updatable in place


def test_in_place_fields_are_described_so_here_and_in_the_docs() -> None:
    described = {p for p, n in schema_fields() if "Updatable in place" in n.get("description", "")}
    assert described == IN_PLACE
    docs = (REPO / "docs" / "aliyun-spec.md").read_text("utf-8")
    for pointer in IN_PLACE:
        assert f"`{pointer}`" in docs, pointer


# ---------------------------------------------------------------------------------------------
# both engines agree on generated documents


# Keys of open objects: plain words, so that every key is one JSON-pointer token as written.
KEYS = st.text(alphabet=string.ascii_letters, min_size=1, max_size=6)


def _near(low: int, high: int) -> st.SearchStrategy[int]:
    edges = [low - 1, low, low + 1, high - 1, high, high + 1]
    return st.one_of(st.sampled_from(edges), st.integers(low - 2, high + 2))


def _wild() -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(), st.booleans(), st.integers(-(2**65), 2**65), st.floats(allow_nan=False)
    )
    return st.recursive(
        scalars | st.text(max_size=5),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
        max_leaves=5,
    )


def _valid(node: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values the schema must accept, read from its own bounds (refused fields never drawn)."""
    node = resolve(node)
    kind = node.get("type")
    if kind == "object" and "properties" not in node:
        return st.dictionaries(KEYS, _wild(), max_size=3)
    if kind == "object":
        properties = {k: v for k, v in node["properties"].items() if "not" not in v}
        required = set(node.get("required", []))
        drawn = st.fixed_dictionaries(
            {k: _valid(v) for k, v in properties.items() if k in required},
            optional={k: _valid(v) for k, v in properties.items() if k not in required},
        )
        if node.get("additionalProperties") is not False:  # the user's own keys
            own = st.dictionaries(KEYS.filter(lambda k: k not in properties), _wild(), max_size=3)
            drawn = st.tuples(drawn, own).map(lambda pair: {**pair[1], **pair[0]})
        needs = node.get("dependencies", {})
        return drawn.map(
            lambda d: {k: v for k, v in d.items() if all(n in d for n in needs.get(k, []))}
        )
    if kind == "integer" and "anyOf" in node:
        return st.just(0) | st.integers(200, 2000)
    if kind == "integer":
        return st.integers(node["minimum"], node["maximum"])
    if kind == "number":
        low, high = node["minimum"], node["maximum"]
        return st.floats(low, high) | st.integers(int(low) + 1, int(high))
    if kind == "boolean":
        return st.booleans()
    if kind == "array":
        return st.lists(_valid(node["items"]), max_size=min(node["maxItems"], 4))
    if "enum" in node:
        return st.sampled_from(node["enum"])
    if "pattern" in node:
        body = node["pattern"].removeprefix("^").removesuffix("$(?![\\s\\S])")
        return st.from_regex(body, fullmatch=True)
    if node.get("x-sensitive"):
        return st.text(max_size=20) | st.just("${env:SECRET}")
    return st.text(min_size=node.get("minLength", 0), max_size=min(node["maxLength"], 40))


def _invalid_leaning(node: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values at and past the node's edges, of the wrong type, or anything at all."""
    node = resolve(node)
    kind = node.get("type")
    if kind == "integer" and "anyOf" in node:
        return _near(0, 0) | _near(200, 2000)
    if kind == "integer":
        return _near(node["minimum"], node["maximum"]) | st.sampled_from([2**63, 1.0, 2.5, True])
    if kind == "number":
        return st.floats(node["minimum"] - 0.1, node["maximum"] + 0.1) | st.just(False)
    if kind == "string":
        cap = node.get("maxLength", 12)
        return st.one_of(
            st.integers(max(cap - 1, 0), cap + 1).map(lambda n: "é" * n),
            st.sampled_from(["${env:NAME}", "${env:bad-name}", "x\n", " ", "重 叠", "", "auto"]),
        )
    return _wild()


def at(document: Any, pointer: str) -> Any:
    for token in tokens(pointer):
        document = document[int(token)] if isinstance(document, list) else document[token]
    return document


def concrete_pointers(value: Any, pointer: str = "") -> Iterator[str]:
    if isinstance(value, dict):
        for key, child in value.items():
            yield f"{pointer}/{key}"
            yield from concrete_pointers(child, f"{pointer}/{key}")
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield f"{pointer}/{index}"
            yield from concrete_pointers(child, f"{pointer}/{index}")


GENERATED = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@GENERATED
@given(_valid(SCHEMA))
def test_generated_valid_documents_are_valid_for_both_engines(document: Any) -> None:
    assert verdict(document)


@GENERATED
@given(_valid(SCHEMA), st.data())
def test_both_engines_agree_on_generated_documents_with_a_fault(
    document: dict[str, Any], data: st.DataObject
) -> None:
    pointer = data.draw(st.sampled_from(sorted(concrete_pointers(document))))
    declared = DECLARED.get(re.sub(r"/\d+(?=/|$)", "/*", pointer))
    fault = _invalid_leaning(declared) if declared is not None else _wild()
    parent = pointer.rsplit("/", 1)[0]
    if isinstance(at(document, parent), dict) and data.draw(st.booleans()):  # a stray key
        pointer = pointer.rsplit("/", 1)[0] + "/" + data.draw(st.sampled_from(["Zzyzx", "volume"]))
        fault = _wild()
    verdict(with_value(pointer, data.draw(fault), document))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(EVERY_FIELD - REFUSED)), st.data())
def test_both_engines_agree_on_one_mutated_field(pointer: str, data: st.DataObject) -> None:
    node = field_schema(pointer)
    verdict(with_value(pointer.replace("*", "0"), data.draw(_invalid_leaning(node))))
