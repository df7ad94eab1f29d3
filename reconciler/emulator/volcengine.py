"""Volcengine RTC Conversational AI as the emulator plays it, without any I/O.

`VolcengineApi.handle` takes one parsed HTTP request and returns the reply the cloud would give:
gateway checks (Action/Version, V4 signature, account QPS), injected faults, then the business
behaviour of Start/Update/StopVoiceChat over a task table keyed by (AppId, RoomId, TaskId).
Wire facts come from reference/volcengine.md; the behaviours it marks UNCONFIRMED (the codes of
"already started" and "task not found", Retry-After) are constructor or fault settings.
The HTTP shell (server.py) only parses bytes, sleeps the injected latency and drops connections.

The fault knobs live in faults.py and the request-body checks in validation.py; Faults,
TokenBucket and pick_fault are re-exported here, where callers have always imported them from.
"""

from __future__ import annotations

import copy
import json
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from random import Random
from typing import Any

from reconciler.emulator.api import ApiRequest, Reply
from reconciler.emulator.faults import Faults, Injected, TokenBucket, pick_fault
from reconciler.emulator.validation import (
    Rejected,
    TaskKey,
    check_start,
    check_update,
    parse_body,
    task_key,
)
from reconciler.providers.volcengine.signing import Clock, Credential, utc_now, verify_signature

__all__ = [
    "ACTIONS",
    "ALREADY_STARTED_MESSAGE",
    "DEFAULT_ALREADY_STARTED_CODE",
    "DEFAULT_API_VERSION",
    "DEFAULT_NOT_FOUND_CODE",
    "ERRORS",
    "SERVICE",
    "ApiRequest",
    "Faults",
    "Injected",
    "Reply",
    "TokenBucket",
    "VolcengineApi",
    "pick_fault",
]

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


@dataclass(slots=True)
class _Task:
    body: dict[str, Any]
    started_at: str
    updates: list[dict[str, Any]] = field(default_factory=list)


class VolcengineApi:
    """The emulated account: credentials, task table, call counters and fault state.

    Thread-safe: the HTTP shell calls `handle` from one thread per connection.
    """

    name = "volcengine"

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

    def control(self, method: str, endpoint: str, data: Mapping[str, Any]) -> Any | None:
        """The inspection endpoints: GET tasks, POST end-task {AppId, RoomId, TaskId}."""
        if (method, endpoint) == ("GET", "tasks"):
            return {"tasks": self.tasks()}
        if (method, endpoint) == ("POST", "end-task"):
            return {
                "ended": self.end_task(str(data["AppId"]), str(data["RoomId"]), str(data["TaskId"]))
            }
        return None

    # -- the API -----------------------------------------------------------------------------------

    def claims(self, request: ApiRequest) -> bool:
        # Everything not claimed by a header-addressed API: a request without Action/Version
        # still deserves Volcengine's InvalidActionOrVersion answer.
        return True

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
        except Rejected as rejected:
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
        body = parse_body(raw)
        key = task_key(body)
        if action == "StartVoiceChat":
            check_start(body)
            if key in self._tasks:
                raise Rejected(self._already_started_code, ALREADY_STARTED_MESSAGE)
            self._tasks[key] = _Task(body=body, started_at=self._clock().isoformat())
        elif action == "UpdateVoiceChat":
            check_update(body)
            self._running(key).updates.append(body)
        else:
            self._running(key)
            del self._tasks[key]

    def _running(self, key: TaskKey) -> _Task:
        task = self._tasks.get(key)
        if task is None:
            raise Rejected(
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
