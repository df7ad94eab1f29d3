"""Alibaba Cloud IMS AI agents (ICE OpenAPI 2020-11-09) as the emulator plays it, without I/O.

`AliyunApi.handle` takes one parsed request and answers as the ICE gateway would: the action and
version headers, the ACS3 signature over the headers the request names, the date (±15 min), a
replayed nonce (400 SignatureNonceUsed), the account's QPS, injected faults, and then the
action itself (aliyun_instances.py). Errors are `{RequestId, HostId, Code, Message, Recommend}`;
throttling is HTTP 400 `Throttling.User` with `x-acs-retry-after` (milliseconds), not 429.
Wire facts: docs/aliyun.md.
"""

from __future__ import annotations

import copy
import json
import secrets
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from random import Random
from typing import Any

from reconciler.emulator.aliyun_instances import HANGUP_USER, Instances
from reconciler.emulator.api import ApiRequest, ControlError, Reply
from reconciler.emulator.faults import Faults, Injected, TokenBucket, pick_fault
from reconciler.emulator.validation import Rejected
from reconciler.providers.aliyun.signing import (
    VALIDITY,
    AcsCredential,
    Clock,
    Refused,
    utc_now,
    verify_acs3,
)

API_VERSION = "2020-11-09"
DEFAULT_NOT_FOUND_CODE = "InvalidInstanceId.NotFound"
DEFAULT_RETRY_AFTER_MS = 100
HOST_ID = "ice.emulator.aliyuncs.com"

# Code → HTTP status; anything unlisted is 400.
STATUSES: Mapping[str, int] = {
    "InvalidAccessKeyId.NotFound": 404,
    "InvalidInstanceId.NotFound": 404,
    "AgentNotFound": 404,
    "InvalidAction.NotFound": 404,
    "Forbidden.SubscriptionRequired": 403,
    "InternalError": 500,
    "BadGateway": 502,
    "ServiceUnavailable": 503,
    "GatewayTimeout": 504,
}
_FAULT_CODES = {
    Injected.ERROR_500: (
        "InternalError",
        "The request processing has failed due to some unknown error.",
    ),
    Injected.ERROR_502: ("BadGateway", "The gateway received an invalid response."),
    Injected.ERROR_503: (
        "ServiceUnavailable",
        "The request has failed due to a temporary failure of the server.",
    ),
    Injected.LATE_504: ("GatewayTimeout", "The request timed out at the gateway."),
}
_THROTTLED = ("Throttling.User", "Request was denied due to user flow control.")


class AliyunApi:
    """The emulated ICE account. Thread-safe: the shell calls `handle` from many threads."""

    name = "aliyun"

    def __init__(
        self,
        *,
        credentials: Sequence[AcsCredential],
        artc_app_id: str,
        artc_app_key: str,
        agents: Sequence[str] | None = None,
        unsubscribed_agents: Sequence[str] = (),
        finish_after: float | None = None,
        faults: Faults | None = None,
        not_found_code: str = DEFAULT_NOT_FOUND_CODE,
        clock: Clock = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._credentials = {c.access_key_id: c for c in credentials}
        self._clock = clock
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._instance_args: dict[str, Any] = {
            "artc_app_id": artc_app_id,
            "artc_app_key": artc_app_key,
            "agents": None if agents is None else frozenset(agents),
            "unsubscribed": frozenset(unsubscribed_agents),
            "not_found_code": not_found_code,
        }
        self._initial_finish_after = finish_after
        self._initial_faults = faults if faults is not None else Faults()
        self._reset_locked()

    def _reset_locked(self) -> None:
        self._instances = Instances(**self._instance_args)
        self._instances.finish_after = self._initial_finish_after
        self._nonces: set[str] = set()
        self._nonce_order: deque[tuple[datetime, str]] = deque()  # oldest first
        self._by_action: Counter[str] = Counter()
        self._by_outcome: Counter[str] = Counter()
        self._throttled = 0
        self._install_faults(self._initial_faults)

    def _install_faults(self, faults: Faults) -> None:
        self._faults = faults
        self._random = Random(faults.seed)
        self._bucket = TokenBucket(faults.qps, self._monotonic) if faults.qps else None

    # -- test-facing state -------------------------------------------------------------------------

    @property
    def faults(self) -> Faults:
        return self._faults

    def set_faults(self, faults: Faults) -> None:
        with self._lock:
            self._install_faults(faults)

    def reset(self) -> None:
        """Forget every instance, nonce and call; back to the construction's faults and knobs."""
        with self._lock:
            self._reset_locked()

    def set_finish_after(self, seconds: float | None) -> None:
        """Instances finish by themselves this long after their Start (None: never)."""
        if seconds is not None and not seconds >= 0:
            raise ValueError("finish_after must be a non-negative number of seconds")
        with self._lock:
            self._instances.finish_after = seconds

    def calls(self) -> dict[str, Any]:
        with self._lock:
            return {
                "total": sum(self._by_action.values()),
                "throttled": self._throttled,
                "by_action": dict(self._by_action),
                "by_outcome": dict(self._by_outcome),
            }

    def instances(self) -> list[dict[str, Any]]:
        """Every instance, finished ones too, oldest first, with its updates and speeches."""
        with self._lock:
            self._instances.expire(self._clock())
            return [
                {
                    "InstanceId": i.instance_id,
                    "AIAgentId": i.agent_id,
                    **i.described(),
                    "Updates": copy.deepcopy(i.updates),
                    "Speeches": copy.deepcopy(i.speeches),
                }
                for i in self._instances.table.values()
            ]

    def live_instances(self) -> list[dict[str, Any]]:
        return [i for i in self.instances() if i["Status"] != "Finished"]

    def end_instance(self, instance_id: str, hangup_role: int = HANGUP_USER) -> bool:
        """Finish an instance as the cloud does by itself (the user left); False if not live."""
        with self._lock:
            return self._instances.end(instance_id, hangup_role, self._clock())

    def join(self, instance_id: str) -> bool:
        with self._lock:
            return self._instances.join(instance_id, self._clock())

    def control(self, method: str, endpoint: str, data: Mapping[str, Any]) -> Any | None:
        """GET instances; POST end-instance {InstanceId, HangupRole?}, join
        {InstanceId}, finish-after {seconds}."""
        route = (method, endpoint)
        if route == ("GET", "instances"):
            return {"instances": self.instances()}
        if route == ("POST", "end-instance"):
            role = data.get("HangupRole", HANGUP_USER)
            if role not in (0, 1, 2):
                raise ControlError("HangupRole must be 0 (agent), 1 (user) or 2 (system)")
            return {"ended": self.end_instance(str(data["InstanceId"]), role)}
        if route == ("POST", "join"):
            return {"joined": self.join(str(data["InstanceId"]))}
        if route == ("POST", "finish-after"):
            seconds = data["seconds"]
            if seconds is not None and (
                isinstance(seconds, bool) or not isinstance(seconds, int | float)
            ):
                raise ControlError("seconds must be a number or null")
            self.set_finish_after(seconds)
            return {"finish_after": seconds}
        return None

    # -- the API -----------------------------------------------------------------------------------

    def claims(self, request: ApiRequest) -> bool:
        return request.header("x-acs-action") is not None

    def handle(self, request: ApiRequest) -> Reply:
        action = request.header("x-acs-action") or ""
        with self._lock:
            now = self._clock()
            self._instances.expire(now)
            reply = self._gateway_check(request, action, now)
            if reply is None:
                reply = self._throttle_or_execute(action, dict(request.query), now)
            self._by_action[action or "(none)"] += 1
            self._by_outcome[reply.outcome] += 1
            return reply

    def _gateway_check(self, request: ApiRequest, action: str, now: datetime) -> Reply | None:
        if action not in _ACTIONS:
            return self._error("InvalidAction.NotFound", f"Specified api {action!r} is not found.")
        version = request.header("x-acs-version")
        if version != API_VERSION:
            return self._error("InvalidVersion", f"Specified version {version!r} is not valid.")
        verdict = verify_acs3(
            method=request.method,
            path=request.path,
            query=request.query,
            headers=request.headers,
            body=request.body,
            credentials=self._credentials,
            now=now,
        )
        if isinstance(verdict, Refused):
            return self._error(verdict.code, verdict.message)
        # Forget nonces older than any date the gateway still accepts.
        while self._nonce_order and now - self._nonce_order[0][0] > 2 * VALIDITY:
            self._nonces.discard(self._nonce_order.popleft()[1])
        if verdict.nonce in self._nonces:
            return self._error("SignatureNonceUsed", "Specified signature nonce was used already.")
        self._nonces.add(verdict.nonce)
        self._nonce_order.append((now, verdict.nonce))
        return None

    def _throttle_or_execute(self, action: str, params: dict[str, str], now: datetime) -> Reply:
        if self._bucket is not None and not self._bucket.take():
            self._throttled += 1
            return self._throttling()
        injected = pick_fault(self._faults, self._random.random())
        if injected is Injected.ERROR_429:
            return self._throttling()
        if injected in (Injected.ERROR_500, Injected.ERROR_502, Injected.ERROR_503):
            return self._error(*_FAULT_CODES[injected])
        try:
            reply = self._success(_ACTIONS[action](self._instances, params, now))
        except Rejected as rejected:
            reply = self._error(rejected.code, rejected.message)
        if injected is Injected.LOST_RESPONSE:
            return Reply(status=0, outcome="lost_response", drop_connection=True)
        if injected is Injected.LATE_504:
            return self._error(*_FAULT_CODES[injected])
        return reply

    # -- replies -----------------------------------------------------------------------------------

    def _throttling(self) -> Reply:
        seconds = self._faults.retry_after
        millis = DEFAULT_RETRY_AFTER_MS if seconds is None else max(1, round(seconds * 1000))
        reply = self._error(*_THROTTLED)
        return Reply(
            reply.status,
            reply.outcome,
            reply.body,
            (*reply.headers, ("x-acs-retry-after", str(millis))),
        )

    def _success(self, result: Mapping[str, Any]) -> Reply:
        return Reply(200, "ok", _json_bytes({"RequestId": _request_id(), **result}), _JSON_HEADERS)

    def _error(self, code: str, message: str) -> Reply:
        request_id = _request_id()
        payload = {
            "RequestId": request_id,
            "HostId": HOST_ID,
            "Code": code,
            "Message": message,
            "Recommend": f"https://api.aliyun.com/troubleshoot?q={code}&product=ICE&requestId={request_id}",
        }
        return Reply(STATUSES.get(code, 400), code, _json_bytes(payload), _JSON_HEADERS)


_ACTIONS: Mapping[str, Callable[[Instances, Mapping[str, str], datetime], Mapping[str, Any]]] = {
    "StartAIAgentInstance": lambda table, params, now: table.start(params, now),
    "StopAIAgentInstance": lambda table, params, now: table.stop(params, now),
    "UpdateAIAgentInstance": lambda table, params, now: table.update(params, now),
    "DescribeAIAgentInstance": lambda table, params, now: table.describe(params),
    "ListAIAgentInstance": lambda table, params, now: table.list(params),
    "SendAIAgentSpeech": lambda table, params, now: table.speak(params),
    "GetAIAgentConcurrency": lambda table, params, now: table.concurrency(params),
}

_JSON_HEADERS: tuple[tuple[str, str], ...] = (("Content-Type", "application/json;charset=utf-8"),)


def _request_id() -> str:
    raw = secrets.token_hex(16).upper()
    return f"{raw[:8]}-{raw[8:12]}-{raw[12:16]}-{raw[16:20]}-{raw[20:]}"


def _json_bytes(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
