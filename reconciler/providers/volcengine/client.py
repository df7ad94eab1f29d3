"""The Volcengine RTC Conversational AI wire client: Start/Update/StopVoiceChat over HTTPS.

One shared keep-alive `httpx.AsyncClient`; every body is serialised once and signed over those
exact bytes. Success is "2xx and no ResponseMetadata.Error" (HTTP 200 can carry an Error). Every
failure becomes a `ProviderError` whose kind comes from `classify`, the one place that knows
which answers are worth retrying. The client never retries: the caller owns the retry policy.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from reconciler.errors import (
    AuthRefused,
    Conflict,
    NotFound,
    SettingsError,
    Terminal,
    Throttled,
    Transient,
)
from reconciler.providers.http_pool import PooledHttp, SecretMask, transport_failure
from reconciler.providers.volcengine.signing import Clock, VolcengineAuth, utc_now

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://rtc.volcengineapi.com"
DEFAULT_REGION = "cn-north-1"
DEFAULT_API_VERSION = "2024-12-01"

_RETRYABLE_CODES = frozenset(
    {"InternalError", "InternalServiceTimeout", "InternalServiceError", "ServiceUnavailableTemp"}
)
# Fragments of the duplicate-Start message, matched case-insensitively: the code is unconfirmed,
# the message is documented.
_ALREADY_STARTED_FRAGMENTS = (
    "the task has been started",
    "do not call the startup task interface repeatedly",
)
# Body keys whose string values are secrets; their values are masked in any error text, in case
# the cloud echoes a parameter back in its message.
_SECRET_KEY = re.compile(r"apikey|api_key|appkey|token|secret|password|accesskey", re.I)
_MAX_SNIPPET = 200


# Cloud error codes that mean the credentials themselves are refused: every further call would
# fail the same way, so the apply stops at the first one.
AUTH_ERROR_CODES = frozenset(
    {
        "InvalidAccessKey",
        "SignatureDoesNotMatch",
        "InvalidCredential",
        "InvalidAuthorization",
        "InvalidSecretToken",
        "AccessDenied",
    }
)


# The error types a failed call is raised as; they share one constructor.
ErrorType = type[Transient | AuthRefused | Conflict | NotFound | Terminal]


def classify(status: int | None, code: str, message: str) -> ErrorType:
    """The error type one failed call is raised as, from its HTTP status, cloud Code and Message.

    Conflict and not-found are checked first: they are specific answers about the task and mean
    "converged" to a reconciler, whatever status carried them.
    """
    if status is not None and 200 <= status <= 299 and not code:
        # A 2xx only gets here when its body was not the API's answer: the call may or may not
        # have happened, and repeating it is safe (a repeated Start reports a conflict).
        return Transient
    lowered_code = code.lower()
    lowered_message = message.lower()
    if any(f in lowered_message for f in _ALREADY_STARTED_FRAGMENTS) or (
        "taskalreadyexists" in lowered_code or "alreadystarted" in lowered_code
    ):
        return Conflict
    if (
        lowered_code == "tasknotexist"
        or "activetasknotfound" in lowered_code
        or "tasknotfound" in lowered_code
    ):
        return NotFound
    if code in AUTH_ERROR_CODES:
        return AuthRefused
    if status == 429 or code.startswith("FlowLimitExceeded"):
        # Refused by the gateway's rate limit, before the call took effect.
        return Throttled
    if (status is not None and 500 <= status <= 599) or code in _RETRYABLE_CODES:
        return Transient
    return Terminal


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), None if absent."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


@dataclass(frozen=True, slots=True)
class CallResult:
    """A successful call: the cloud's request id (for logs and support) and its Result."""

    action: str
    request_id: str
    result: Any


class VolcengineClient(PooledHttp):
    """Start/Update/StopVoiceChat for one account; safe to share between concurrent tasks.

    Pass `http` to share a connection pool (the client then leaves closing it to the caller);
    `clock` is the signing clock, injectable so tests can sign at any moment.
    """

    def __init__(
        self,
        endpoint: str,
        region: str,
        api_version: str,
        access_key_id: str,
        secret_access_key: str,
        session_token: str | None = None,
        timeout: float = 10.0,
        http: httpx.AsyncClient | None = None,
        *,
        max_connections: int = 64,
        clock: Clock = utc_now,
    ) -> None:
        if urlsplit(endpoint).scheme not in ("http", "https") or not urlsplit(endpoint).netloc:
            raise SettingsError(f"the Volcengine endpoint must be an http(s) URL, got {endpoint!r}")
        if not access_key_id or not secret_access_key:
            raise SettingsError("Volcengine credentials are missing (access key id and secret)")
        session_token = session_token or None  # an empty setting means "no STS token"
        self.endpoint = endpoint.rstrip("/") + "/"
        self.region = region
        self.api_version = api_version
        self._secrets = tuple(s for s in (secret_access_key, session_token) if s)
        self._auth = VolcengineAuth(
            access_key_id, secret_access_key, region, session_token=session_token, clock=clock
        )
        self._clock = clock
        self._open_pool(http, timeout, max_connections)

    def __repr__(self) -> str:
        return f"VolcengineClient({self.endpoint!r}, region={self.region!r})"

    async def start(self, body: Mapping[str, Any]) -> CallResult:
        """StartVoiceChat with `body` exactly as given (secrets already resolved)."""
        return await self._call("StartVoiceChat", body)

    async def stop(self, app_id: str, room_id: str, task_id: str) -> CallResult:
        return await self._call(
            "StopVoiceChat", {"AppId": app_id, "RoomId": room_id, "TaskId": task_id}
        )

    async def update(
        self,
        app_id: str,
        room_id: str,
        task_id: str,
        command: str,
        message: str | None = None,
        interrupt_mode: int | None = None,
    ) -> CallResult:
        body: dict[str, Any] = {
            "AppId": app_id,
            "RoomId": room_id,
            "TaskId": task_id,
            "Command": command,
        }
        if message is not None:
            body["Message"] = message
        if interrupt_mode is not None:
            body["InterruptMode"] = interrupt_mode
        return await self._call("UpdateVoiceChat", body)

    async def _call(self, action: str, body: Mapping[str, Any]) -> CallResult:
        # Serialised once: these exact bytes are hashed, signed and sent.
        content = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        redact = SecretMask([*self._secrets, *_secret_values(body)])
        try:
            response = await self._http.post(
                self.endpoint,
                params={"Action": action, "Version": self.api_version},
                content=content,
                headers={"Content-Type": "application/json"},
                auth=self._auth,
                timeout=self._timeout,
            )
        except httpx.TransportError as exc:
            failure = transport_failure(action, exc, redact)
            log.debug("volcengine %s transport error: %s", action, failure)
            raise failure from None
        return self._interpret(action, response, redact)

    def _interpret(self, action: str, response: httpx.Response, redact: SecretMask) -> CallResult:
        status = response.status_code
        try:
            payload = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            payload = None
        metadata = payload.get("ResponseMetadata") if isinstance(payload, dict) else None
        if isinstance(payload, dict) and isinstance(metadata, dict):
            request_id, error = str(metadata.get("RequestId", "")), metadata.get("Error")
            log.debug("volcengine %s -> HTTP %s request %s", action, status, request_id)
            if 200 <= status <= 299 and not error:
                return CallResult(action, request_id, payload.get("Result"))
        else:
            # Not the API's envelope (a proxy's page, a truncated body): never taken as success.
            request_id, error = "", None
        if isinstance(error, dict):
            code = str(error.get("Code", ""))
            message = str(error.get("Message", ""))
        else:
            code = ""
            message = response.text[:_MAX_SNIPPET] or f"HTTP {status} without a body"
        detail = f"{action}: {message}"
        if request_id:
            detail += f" (request {request_id})"
        raise classify(status, code, message)(
            redact(detail),
            code=code,
            status=status,
            retry_after=parse_retry_after(response.headers.get("Retry-After"), self._clock()),
        )


def _secret_values(node: Any, sensitive: bool = False) -> list[str]:
    """String values under keys that name a secret (APIKey, token...), anywhere in the body."""
    if isinstance(node, Mapping):
        found: list[str] = []
        for key, value in node.items():
            found += _secret_values(value, sensitive or bool(_SECRET_KEY.search(str(key))))
        return found
    if isinstance(node, list):
        return [s for item in node for s in _secret_values(item, sensitive)]
    return [node] if sensitive and isinstance(node, str) else []
