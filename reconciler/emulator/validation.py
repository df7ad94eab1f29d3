"""Request-body validation of Start/Update/StopVoiceChat: documented required fields only.

Each check raises `Rejected` with the error Code and Message the cloud would answer with;
`task_key` reads the (AppId, RoomId, TaskId) every action addresses its task by.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

_ID = re.compile(r"[A-Za-z0-9@._-]{1,128}")
_APP_ID_LENGTH = 24
_MAX_TTS_MESSAGE = 200
_UPDATE_COMMANDS = frozenset(
    {
        "interrupt",
        "Interrupt",  # both spellings appear in official material
        "function",
        "FunctionCallResult",
        "ExternalTextToSpeech",
        "ExternalPromptsForLLM",
        "ExternalTextToLLM",
        "FinishSpeechRecognition",
    }
)
_COMMANDS_WITH_MESSAGE = frozenset(
    {
        "function",
        "FunctionCallResult",
        "ExternalTextToSpeech",
        "ExternalPromptsForLLM",
        "ExternalTextToLLM",
    }
)

TaskKey = tuple[str, str, str]


class Rejected(Exception):
    """A business-level refusal: the error code and message the cloud would answer with."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message


def parse_body(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw.decode("utf-8")) if raw else None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Rejected("InvalidParameter", f"The request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise Rejected("InvalidParameter", "The request body must be a JSON object.")
    return body


def _required(body: Mapping[str, Any], name: str, path: str = "") -> Any:
    value = body.get(name)
    if value is None or value == "" or value == [] or value == {}:
        raise Rejected("MissingParameter", f"Parameter {path}{name} must not be empty")
    return value


def _string(body: Mapping[str, Any], name: str, path: str = "") -> str:
    value = _required(body, name, path)
    if not isinstance(value, str):
        raise Rejected("InvalidParameter", f"Parameter {path}{name} must be a string")
    return value


def _object(body: Mapping[str, Any], name: str, path: str = "") -> dict[str, Any]:
    value = _required(body, name, path)
    if not isinstance(value, dict):
        raise Rejected("InvalidParameter", f"Parameter {path}{name} must be an object")
    return value


def _identifier(body: Mapping[str, Any], name: str, path: str = "") -> str:
    value = _string(body, name, path)
    if not _ID.fullmatch(value):
        raise Rejected(
            "InvalidParameter",
            f"Parameter {path}{name} must be 1-128 characters of a-zA-Z0-9@._-",
        )
    return value


def task_key(body: Mapping[str, Any]) -> TaskKey:
    app_id = _identifier(body, "AppId")
    if len(app_id) != _APP_ID_LENGTH:
        raise Rejected("InvalidParameter", f"Parameter AppId must be {_APP_ID_LENGTH} characters")
    return app_id, _identifier(body, "RoomId"), _identifier(body, "TaskId")


def check_start(body: Mapping[str, Any]) -> None:
    config = _object(body, "Config")
    for name in ("ASRConfig", "TTSConfig"):
        if name in config:
            section = _object(config, name, "Config.")
            _string(section, "Provider", f"Config.{name}.")
            _object(section, "ProviderParams", f"Config.{name}.")
    if "LLMConfig" in config:
        llm = _object(config, "LLMConfig", "Config.")
        if _string(llm, "Mode", "Config.LLMConfig.") == "CustomLLM":
            _string(llm, "Url", "Config.LLMConfig.")
    mode = config.get("InterruptMode", 0)
    if isinstance(mode, bool) or mode not in (0, 1):
        raise Rejected("InvalidParameter", "Parameter Config.InterruptMode must be 0 or 1")
    agent = _object(body, "AgentConfig")
    targets = _required(agent, "TargetUserId", "AgentConfig.")
    if not isinstance(targets, list) or len(targets) != 1:
        raise Rejected(
            "InvalidParameter", "Parameter AgentConfig.TargetUserId must hold exactly one user id"
        )
    target = _identifier({"TargetUserId": targets[0]}, "TargetUserId", "AgentConfig.")
    if _identifier(agent, "UserId", "AgentConfig.") == target:
        raise Rejected(
            "InvalidParameter",
            "Parameter AgentConfig.UserId must differ from AgentConfig.TargetUserId",
        )


def check_update(body: Mapping[str, Any]) -> None:
    command = _string(body, "Command")
    if command not in _UPDATE_COMMANDS:
        raise Rejected("InvalidParameter", f"Command {command!r} is not supported")
    if command in _COMMANDS_WITH_MESSAGE:
        message = _string(body, "Message")
        if command == "ExternalTextToSpeech" and len(message) > _MAX_TTS_MESSAGE:
            raise Rejected(
                "InvalidParameter",
                f"Parameter Message must be at most {_MAX_TTS_MESSAGE} characters",
            )
    elif "Message" in body and not isinstance(body["Message"], str):
        raise Rejected("InvalidParameter", "Parameter Message must be a string")
    if "InterruptMode" in body:
        mode = body["InterruptMode"]
        if isinstance(mode, bool) or mode not in (1, 2, 3):
            raise Rejected("InvalidParameter", "Parameter InterruptMode must be 1, 2 or 3")
