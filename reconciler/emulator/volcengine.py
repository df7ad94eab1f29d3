"""Volcengine RTC Conversational AI as the emulator plays it, without any I/O.

`VolcengineApi.handle` takes one parsed HTTP request and returns the reply the cloud would give:
gateway checks (Action/Version, V4 signature, account QPS), injected faults, then the business
behaviour of Start/Update/StopVoiceChat over a task table keyed by (AppId, RoomId, TaskId).
Wire facts come from reference/volcengine.md; the behaviours it marks UNCONFIRMED (the codes of
"already started" and "task not found", Retry-After) are constructor or fault settings.
The HTTP shell (server.py) only parses bytes, sleeps the injected latency and drops connections.
"""

from __future__ import annotations

import copy
import json
import math
import re
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from random import Random
from typing import Any

from reconciler.providers.signing import Clock, Credential, utc_now, verify_signature

DEFAULT_API_VERSION = "2024-12-01"
SERVICE = "rtc"
ACTIONS = ("StartVoiceChat", "UpdateVoiceChat", "StopVoiceChat")
ALREADY_STARTED_MESSAGE = (
    "The task has been started. Please do not call the startup task interface repeatedly."
)
DEFAULT_ALREADY_STARTED_CODE = "InvalidParameter.TaskAlreadyExists"
DEFAULT_NOT_FOUND_CODE = "InvalidParameter.ErrorActiveTaskNotFound"

# Code → (HTTP status, CodeN). CodeN only where the public error table gives one.
ERRORS: Mapping[str, tuple[int, int | None]] = {
    "MissingParameter": (400, 100002),
    "MissingRequestInfo": (400, 100004),
    "InvalidTimestamp": (400, 100006),
    "InvalidActionOrVersion": (404, 100008),
    "InvalidAccessKey": (401, 100009),
    "SignatureDoesNotMatch": (401, 100010),
    "AccessDenied": (403, 100013),
    "InternalError": (500, 100014),
    "InternalServiceTimeout": (504, 100016),
    "InvalidParameter": (400, None),
    "InvalidAuthorization": (400, None),
    "InvalidCredential": (400, None),
    "InvalidSecretToken": (401, None),
    "ServiceNotFound": (404, None),
    "FlowLimitExceeded": (429, None),
    "InternalServiceError": (502, None),
    "ServiceUnavailableTemp": (503, None),
}

_GATEWAY_MESSAGES = {
    "MissingRequestInfo": "The request is missing the Authorization or X-Date header.",
    "InvalidAuthorization": "The Authorization header is malformed.",
    "InvalidCredential": "The credential scope in the Authorization header is invalid.",
    "InvalidAccessKey": "The access key id does not exist.",
    "InvalidSecretToken": "The security token is invalid or expired.",
    "InvalidTimestamp": "The X-Date is malformed or outside the validity window.",
    "SignatureDoesNotMatch": "The request signature does not match the computed signature.",
    "FlowLimitExceeded": "Flow limit exceeded, please retry later.",
    "InternalError": "Internal error, please retry later.",
    "InternalServiceError": "Internal service error, please retry later.",
    "ServiceUnavailableTemp": "Service temporarily unavailable, please retry later.",
    "InternalServiceTimeout": "Internal service timeout, please retry later.",
}

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


@dataclass(frozen=True, slots=True)
class Faults:
    """Misbehaviour to inject. Rates are probabilities per API call and may sum to at most 1.

    500/502/503/429 injections answer without taking effect; lost_response and late_504 take
    effect first and then lose the answer (connection closed / HTTP 504 InternalServiceTimeout).
    `qps` caps the whole account (token bucket, one second of burst); `retry_after`, when set,
    is sent as a Retry-After header on every 429 (whether the real gateway does is unconfirmed).
    """

    qps: float | None = None
    latency: float = 0.0
    error_500_rate: float = 0.0
    error_502_rate: float = 0.0
    error_503_rate: float = 0.0
    error_429_rate: float = 0.0
    lost_response_rate: float = 0.0
    late_504_rate: float = 0.0
    retry_after: float | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        for knob in fields(self):
            value = getattr(self, knob.name)
            if knob.name != "seed" and value is not None and not math.isfinite(value):
                raise ValueError(f"{knob.name} must be a finite number")
        if self.qps is not None and self.qps <= 0:
            raise ValueError("qps must be positive (or null for no cap)")
        if self.latency < 0:
            raise ValueError("latency must not be negative")
        if self.retry_after is not None and self.retry_after < 0:
            raise ValueError("retry_after must not be negative")
        for name, rate in self._rates():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        # A small tolerance: callers split one rate in thirds, which may sum to 1 + 2e-16.
        if sum(rate for _, rate in self._rates()) > 1.0 + 1e-9:
            raise ValueError("the fault rates must sum to at most 1")

    def _rates(self) -> list[tuple[str, float]]:
        return [(f.name, getattr(self, f.name)) for f in fields(self) if f.name.endswith("_rate")]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Faults:
        """Build from a JSON object; unknown knobs and non-numbers are refused by name."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown fault knob(s): {', '.join(unknown)}")
        for name, value in data.items():
            if value is None and name in ("qps", "retry_after", "seed"):
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} must be a number")
            if name == "seed" and not isinstance(value, int):
                raise ValueError("seed must be an integer")
        return cls(**data)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Injected(Enum):
    NONE = "none"
    ERROR_500 = "InternalError"
    ERROR_502 = "InternalServiceError"
    ERROR_503 = "ServiceUnavailableTemp"
    ERROR_429 = "FlowLimitExceeded"
    LOST_RESPONSE = "lost_response"
    LATE_504 = "InternalServiceTimeout"


def pick_fault(faults: Faults, draw: float) -> Injected:
    """Map one uniform draw in [0, 1) onto the fault rates laid end to end."""
    edge = 0.0
    for fault, rate in (
        (Injected.ERROR_500, faults.error_500_rate),
        (Injected.ERROR_502, faults.error_502_rate),
        (Injected.ERROR_503, faults.error_503_rate),
        (Injected.ERROR_429, faults.error_429_rate),
        (Injected.LOST_RESPONSE, faults.lost_response_rate),
        (Injected.LATE_504, faults.late_504_rate),
    ):
        edge += rate
        if draw < edge:
            return fault
    return Injected.NONE


class TokenBucket:
    """`rate` tokens per second, holding at most one second's worth (never less than one)."""

    def __init__(self, rate: float, monotonic: Callable[[], float]) -> None:
        self._rate = rate
        self._capacity = max(rate, 1.0)
        self._tokens = self._capacity
        self._monotonic = monotonic
        self._updated = monotonic()

    def take(self) -> bool:
        now = self._monotonic()
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(self._capacity, self._tokens + elapsed * self._rate)
        self._updated = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


@dataclass(frozen=True, slots=True)
class ApiRequest:
    """One HTTP request as the shell parsed it; header names may be in any case."""

    method: str
    path: str
    query: Sequence[tuple[str, str]]
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class Reply:
    """What to send back; `drop_connection` means: send nothing and close the socket.

    `outcome` is what the call counters record: "ok", the error Code, or "lost_response".
    """

    status: int
    outcome: str
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    drop_connection: bool = False


@dataclass(slots=True)
class _Task:
    body: dict[str, Any]
    started_at: str
    updates: list[dict[str, Any]] = field(default_factory=list)


class _Rejected(Exception):
    """A business-level refusal: the error code and message the cloud would answer with."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message


class VolcengineApi:
    """The emulated account: credentials, task table, call counters and fault state.

    Thread-safe: the HTTP shell calls `handle` from one thread per connection.
    """

    def __init__(
        self,
        *,
        credentials: Sequence[Credential],
        region: str = "cn-north-1",
        api_version: str = DEFAULT_API_VERSION,
        faults: Faults | None = None,
        already_started_code: str = DEFAULT_ALREADY_STARTED_CODE,
        not_found_code: str = DEFAULT_NOT_FOUND_CODE,
        clock: Clock = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
        validity_seconds: float = 900.0,
    ) -> None:
        self._credentials = {c.access_key_id: c for c in credentials}
        self.region = region
        self.api_version = api_version
        self._already_started_code = already_started_code
        self._not_found_code = not_found_code
        self._clock = clock
        self._monotonic = monotonic
        self._validity_seconds = validity_seconds
        self._initial_faults = faults if faults is not None else Faults()
        self._lock = threading.Lock()
        self._tasks: dict[TaskKey, _Task] = {}
        self._by_action: Counter[str] = Counter()
        self._by_outcome: Counter[str] = Counter()
        self._throttled = 0
        self._install_faults(self._initial_faults)

    # -- test-facing state -------------------------------------------------------------------------

    @property
    def faults(self) -> Faults:
        return self._faults

    def set_faults(self, faults: Faults) -> None:
        with self._lock:
            self._install_faults(faults)

    def _install_faults(self, faults: Faults) -> None:
        self._faults = faults
        self._random = Random(faults.seed)
        self._bucket = TokenBucket(faults.qps, self._monotonic) if faults.qps else None

    def reset(self) -> None:
        """Forget every task and call, and go back to the faults given at construction."""
        with self._lock:
            self._tasks.clear()
            self._by_action.clear()
            self._by_outcome.clear()
            self._throttled = 0
            self._install_faults(self._initial_faults)

    def tasks(self) -> list[dict[str, Any]]:
        """Running tasks with their full Start body and every accepted update, oldest first."""
        with self._lock:
            return [
                {
                    "AppId": key[0],
                    "RoomId": key[1],
                    "TaskId": key[2],
                    "StartedAt": task.started_at,
                    "Body": copy.deepcopy(task.body),
                    "Updates": copy.deepcopy(task.updates),
                }
                for key, task in self._tasks.items()
            ]

    def calls(self) -> dict[str, Any]:
        """Counts per action and per outcome ("ok", an error Code, or "lost_response")."""
        with self._lock:
            return {
                "total": sum(self._by_action.values()),
                "throttled": self._throttled,
                "by_action": dict(self._by_action),
                "by_outcome": dict(self._by_outcome),
            }

    def end_task(self, app_id: str, room_id: str, task_id: str) -> bool:
        """End a task as the cloud does by itself (IdleTimeout); False if it was not running."""
        with self._lock:
            return self._tasks.pop((app_id, room_id, task_id), None) is not None

    # -- the API -----------------------------------------------------------------------------------

    def handle(self, request: ApiRequest) -> Reply:
        query = dict(request.query)
        action, version = query.get("Action", ""), query.get("Version", "")
        reply = self._gateway_check(request, action, version)
        if reply is not None:
            with self._lock:
                self._count(action, reply)
            return reply
        with self._lock:
            reply = self._throttle_or_execute(action, version, request.body)
            self._count(action, reply)
            return reply

    def _gateway_check(self, request: ApiRequest, action: str, version: str) -> Reply | None:
        if action not in ACTIONS or version != self.api_version:
            message = f"Could not find operation {action!r} for version {version!r}."
            return self._error(action, version, "InvalidActionOrVersion", message)
        code = verify_signature(
            method=request.method,
            path=request.path,
            query=request.query,
            headers=request.headers,
            body=request.body,
            credentials=self._credentials,
            region=self.region,
            service=SERVICE,
            now=self._clock(),
            validity_seconds=self._validity_seconds,
        )
        if code is not None:
            return self._error(action, version, code, _GATEWAY_MESSAGES[code])
        return None

    def _throttle_or_execute(self, action: str, version: str, body: bytes) -> Reply:
        if self._bucket is not None and not self._bucket.take():
            self._throttled += 1
            return self._error(action, version, "FlowLimitExceeded")
        injected = pick_fault(self._faults, self._random.random())
        if injected in (
            Injected.ERROR_500,
            Injected.ERROR_502,
            Injected.ERROR_503,
            Injected.ERROR_429,
        ):
            return self._error(action, version, injected.value)
        try:
            self._execute(action, body)
            reply = self._success(action, version)
        except _Rejected as rejected:
            reply = self._error(action, version, rejected.code, rejected.message)
        if injected is Injected.LOST_RESPONSE:
            return Reply(status=0, outcome="lost_response", drop_connection=True)
        if injected is Injected.LATE_504:
            return self._error(action, version, injected.value)
        return reply

    def _count(self, action: str, reply: Reply) -> None:
        self._by_action[action or "(none)"] += 1
        self._by_outcome[reply.outcome] += 1

    def _execute(self, action: str, raw: bytes) -> None:
        body = _parse_body(raw)
        key = _task_key(body)
        if action == "StartVoiceChat":
            _check_start(body)
            if key in self._tasks:
                raise _Rejected(self._already_started_code, ALREADY_STARTED_MESSAGE)
            self._tasks[key] = _Task(body=body, started_at=self._clock().isoformat())
        elif action == "UpdateVoiceChat":
            _check_update(body)
            self._running(key).updates.append(body)
        else:
            self._running(key)
            del self._tasks[key]

    def _running(self, key: TaskKey) -> _Task:
        task = self._tasks.get(key)
        if task is None:
            raise _Rejected(
                self._not_found_code,
                f"The task {key[2]} in room {key[1]} of app {key[0]} is not running.",
            )
        return task

    # -- responses ---------------------------------------------------------------------------------

    def _metadata(self, action: str, version: str) -> dict[str, Any]:
        stamp = self._clock().strftime("%Y%m%d%H%M%S")
        return {
            "RequestId": f"{stamp}{secrets.token_hex(9)}",
            "Action": action,
            "Version": version,
            "Service": SERVICE,
            "Region": self.region,
        }

    def _success(self, action: str, version: str) -> Reply:
        payload = {"ResponseMetadata": self._metadata(action, version), "Result": "ok"}
        return Reply(200, "ok", _json_bytes(payload), _JSON_HEADERS)

    def _error(self, action: str, version: str, code: str, message: str | None = None) -> Reply:
        status, code_n = ERRORS.get(code, (400, None))
        error: dict[str, Any] = {} if code_n is None else {"CodeN": code_n}
        error["Code"] = code
        error["Message"] = message if message is not None else _GATEWAY_MESSAGES[code]
        metadata = self._metadata(action, version)
        metadata["Error"] = error
        headers = _JSON_HEADERS
        if status == 429 and self._faults.retry_after is not None:
            headers = (*headers, ("Retry-After", f"{self._faults.retry_after:g}"))
        return Reply(status, code, _json_bytes({"ResponseMetadata": metadata}), headers)


_JSON_HEADERS: tuple[tuple[str, str], ...] = (("Content-Type", "application/json; charset=utf-8"),)


def _json_bytes(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# -- request validation (documented required fields only) ------------------------------------------


def _parse_body(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw.decode("utf-8")) if raw else None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _Rejected("InvalidParameter", f"The request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise _Rejected("InvalidParameter", "The request body must be a JSON object.")
    return body


def _required(body: Mapping[str, Any], name: str, path: str = "") -> Any:
    value = body.get(name)
    if value is None or value == "" or value == [] or value == {}:
        raise _Rejected("MissingParameter", f"Parameter {path}{name} must not be empty")
    return value


def _string(body: Mapping[str, Any], name: str, path: str = "") -> str:
    value = _required(body, name, path)
    if not isinstance(value, str):
        raise _Rejected("InvalidParameter", f"Parameter {path}{name} must be a string")
    return value


def _object(body: Mapping[str, Any], name: str, path: str = "") -> dict[str, Any]:
    value = _required(body, name, path)
    if not isinstance(value, dict):
        raise _Rejected("InvalidParameter", f"Parameter {path}{name} must be an object")
    return value


def _identifier(body: Mapping[str, Any], name: str, path: str = "") -> str:
    value = _string(body, name, path)
    if not _ID.fullmatch(value):
        raise _Rejected(
            "InvalidParameter",
            f"Parameter {path}{name} must be 1-128 characters of a-zA-Z0-9@._-",
        )
    return value


def _task_key(body: Mapping[str, Any]) -> TaskKey:
    app_id = _identifier(body, "AppId")
    if len(app_id) != _APP_ID_LENGTH:
        raise _Rejected("InvalidParameter", f"Parameter AppId must be {_APP_ID_LENGTH} characters")
    return app_id, _identifier(body, "RoomId"), _identifier(body, "TaskId")


def _check_start(body: Mapping[str, Any]) -> None:
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
        raise _Rejected("InvalidParameter", "Parameter Config.InterruptMode must be 0 or 1")
    agent = _object(body, "AgentConfig")
    targets = _required(agent, "TargetUserId", "AgentConfig.")
    if not isinstance(targets, list) or len(targets) != 1:
        raise _Rejected(
            "InvalidParameter", "Parameter AgentConfig.TargetUserId must hold exactly one user id"
        )
    target = _identifier({"TargetUserId": targets[0]}, "TargetUserId", "AgentConfig.")
    if _identifier(agent, "UserId", "AgentConfig.") == target:
        raise _Rejected(
            "InvalidParameter",
            "Parameter AgentConfig.UserId must differ from AgentConfig.TargetUserId",
        )


def _check_update(body: Mapping[str, Any]) -> None:
    command = _string(body, "Command")
    if command not in _UPDATE_COMMANDS:
        raise _Rejected("InvalidParameter", f"Command {command!r} is not supported")
    if command in _COMMANDS_WITH_MESSAGE:
        message = _string(body, "Message")
        if command == "ExternalTextToSpeech" and len(message) > _MAX_TTS_MESSAGE:
            raise _Rejected(
                "InvalidParameter",
                f"Parameter Message must be at most {_MAX_TTS_MESSAGE} characters",
            )
    elif "Message" in body and not isinstance(body["Message"], str):
        raise _Rejected("InvalidParameter", "Parameter Message must be a string")
    if "InterruptMode" in body:
        mode = body["InterruptMode"]
        if isinstance(mode, bool) or mode not in (1, 2, 3):
            raise _Rejected("InvalidParameter", "Parameter InterruptMode must be 1, 2 or 3")
