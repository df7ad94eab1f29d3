"""The Alibaba Cloud ICE (IMS AI agent) wire client: RPC calls exactly as the official SDK
sends them — `POST /`, every parameter in the query string (nested objects as compact JSON
strings), an empty body, `x-acs-action` / `x-acs-version` headers, signed ACS3-HMAC-SHA256
with a fresh nonce per attempt.

Every failure becomes one ProviderError subclass, decided once in `classify`. The client
never retries: the engine owns the retry policy and the rate limit.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from reconciler.errors import (
    AuthRefused,
    NotFound,
    ProviderError,
    SettingsError,
    Terminal,
    Throttled,
    Transient,
)
from reconciler.providers.aliyun.signing import AcsAuth, Clock, encode_query, utc_now
from reconciler.providers.http_pool import PooledHttp, SecretMask, transport_failure

log = logging.getLogger(__name__)

API_VERSION = "2020-11-09"
# The client-side codes the AICallKit SDK shows for these server codes (seed error table).
CLIENT_CODES = {"AgentNotFound": -10204, "Forbidden.SubscriptionRequired": -10203}
# Actions on one instance, where a not-found-shaped code means "that instance is not running".
_INSTANCE_ACTIONS = frozenset(
    {
        "StopAIAgentInstance",
        "DescribeAIAgentInstance",
        "UpdateAIAgentInstance",
        "SendAIAgentSpeech",
    }
)
_RETRYABLE_CODES = frozenset({"InternalError", "ServiceUnavailable"})
_MAX_SNIPPET = 200


@dataclass(frozen=True, slots=True)
class CallResult:
    action: str
    request_id: str
    body: Mapping[str, Any]


def _is_auth_code(code: str) -> bool:
    return (
        code == "SignatureDoesNotMatch"
        or code.startswith("InvalidAccessKeyId")
        or code.startswith("InvalidSecurityToken")
        or code == "MissingSecurityToken"
        or (code.startswith("Forbidden") and code != "Forbidden.SubscriptionRequired")
    )


def _is_not_found_shaped(code: str) -> bool:
    return code != "AgentNotFound" and ("NotFound" in code or "NotExist" in code)


def parse_retry_after_ms(value: str | None) -> float | None:
    """`x-acs-retry-after` is milliseconds; a positive one is seconds to wait at least."""
    if value is None:
        return None
    try:
        millis = float(value.strip())
    except ValueError:
        return None
    return millis / 1000 if millis > 0 and millis != float("inf") else None


def classify(
    action: str, status: int, code: str, message: str, retry_after: float | None
) -> ProviderError:
    """The one place that decides what a failed answer means to the engine."""
    if retry_after is not None or code.startswith("Throttling") or status == 429:
        # Throttling comes as HTTP 400 with Code Throttling*, or as any error that says when
        # to come back; either way the gateway refused it before it took effect.
        return Throttled(message, code=code, status=status, retry_after=retry_after)
    if code in CLIENT_CODES:
        return Terminal(message, code=code, status=status, client_code=CLIENT_CODES[code])
    if _is_auth_code(code):
        return AuthRefused(message, code=code, status=status)
    if action in _INSTANCE_ACTIONS and _is_not_found_shaped(code):
        return NotFound(message, code=code, status=status)
    if status >= 500 or code in _RETRYABLE_CODES or 200 <= status <= 299:
        # A 2xx only gets here when its body was not the API's answer: it may have happened.
        return Transient(message, code=code, status=status)
    return Terminal(message, code=code, status=status)


def query_value(value: Any) -> str:
    """One parameter as the SDK puts it in the query: objects and arrays as compact JSON."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(value)


class AliyunClient(PooledHttp):
    """The AI-agent actions of one account; safe to share between concurrent tasks."""

    def __init__(
        self,
        endpoint: str,
        access_key_id: str,
        access_key_secret: str,
        security_token: str | None = None,
        timeout: float = 10.0,
        http: httpx.AsyncClient | None = None,
        *,
        max_connections: int = 64,
        clock: Clock = utc_now,
    ) -> None:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise SettingsError(
                f"the Alibaba Cloud endpoint must be an http(s) URL, got {endpoint!r}"
            )
        if not access_key_id or not access_key_secret:
            raise SettingsError("Alibaba Cloud credentials are missing (access key id and secret)")
        security_token = security_token or None
        self.endpoint = endpoint.rstrip("/") + "/"
        self._secrets = tuple(s for s in (access_key_secret, security_token) if s)
        self._auth = AcsAuth(access_key_id, access_key_secret, security_token, clock=clock)
        self._open_pool(http, timeout, max_connections)

    def __repr__(self) -> str:
        return f"AliyunClient({self.endpoint!r})"

    # -- the actions -------------------------------------------------------------------------------

    async def start(self, params: Mapping[str, Any]) -> str:
        """StartAIAgentInstance; the InstanceId the cloud chose."""
        result = await self.call("StartAIAgentInstance", params)
        instance_id = result.body.get("InstanceId")
        if not isinstance(instance_id, str) or not instance_id:
            raise Transient(
                f"StartAIAgentInstance answered without an InstanceId ({result.request_id})"
            )
        return instance_id

    async def stop(self, instance_id: str) -> CallResult:
        return await self.call("StopAIAgentInstance", {"InstanceId": instance_id})

    async def update(self, instance_id: str, params: Mapping[str, Any]) -> CallResult:
        return await self.call("UpdateAIAgentInstance", {"InstanceId": instance_id, **params})

    async def describe(self, instance_id: str) -> Mapping[str, Any]:
        """The `Instance` object of DescribeAIAgentInstance."""
        result = await self.call("DescribeAIAgentInstance", {"InstanceId": instance_id})
        instance = result.body.get("Instance")
        if not isinstance(instance, Mapping):
            raise Transient(
                f"DescribeAIAgentInstance answered without an Instance ({result.request_id})"
            )
        return instance

    async def list_page(
        self, agent_id: str, page_number: int, page_size: int
    ) -> list[Mapping[str, Any]]:
        result = await self.call(
            "ListAIAgentInstance",
            {"AIAgentId": agent_id, "PageNumber": page_number, "PageSize": page_size},
        )
        rows = result.body.get("Instances", [])
        if not isinstance(rows, list) or not all(isinstance(r, Mapping) for r in rows):
            raise Transient(f"ListAIAgentInstance answered without Instances ({result.request_id})")
        return rows

    async def speak(self, instance_id: str, text: str, enable_interrupt: bool) -> CallResult:
        return await self.call(
            "SendAIAgentSpeech",
            {"InstanceId": instance_id, "Text": text, "EnableInterrupt": enable_interrupt},
        )

    async def concurrency(self, agent_id: str) -> int:
        result = await self.call("GetAIAgentConcurrency", {"AIAgentId": agent_id})
        count = result.body.get("ActiveCount")
        if not isinstance(count, int):
            raise Transient(
                f"GetAIAgentConcurrency answered without ActiveCount ({result.request_id})"
            )
        return count

    # -- the wire ----------------------------------------------------------------------------------

    async def call(self, action: str, params: Mapping[str, Any]) -> CallResult:
        pairs = [(k, query_value(v)) for k, v in params.items() if v is not None]
        redact = SecretMask([*self._secrets, *_token_values(params)])
        try:
            response = await self._http.post(
                f"{self.endpoint}?{encode_query(pairs)}",
                content=b"",
                headers={
                    "x-acs-action": action,
                    "x-acs-version": API_VERSION,
                    "accept": "application/json",
                },
                auth=self._auth,
                timeout=self._timeout,
            )
        except httpx.TransportError as exc:
            raise transport_failure(action, exc, redact) from None
        return self._interpret(action, response, redact)

    def _interpret(self, action: str, response: httpx.Response, redact: SecretMask) -> CallResult:
        status = response.status_code
        try:
            payload = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            payload = None
        body: Mapping[str, Any] = payload if isinstance(payload, dict) else {}
        request_id = str(body.get("RequestId", ""))
        log.debug("aliyun %s -> HTTP %s request %s", action, status, request_id)
        if 200 <= status <= 299 and request_id and "Code" not in body:
            return CallResult(action, request_id, body)
        code = str(body.get("Code", ""))
        message = str(body.get("Message", "")) or (
            response.text[:_MAX_SNIPPET] or f"HTTP {status} without a body"
        )
        detail = f"{action}: {message}" + (f" (request {request_id})" if request_id else "")
        retry_after = parse_retry_after_ms(response.headers.get("x-acs-retry-after"))
        raise classify(action, status, code, redact(detail), retry_after)


def _token_values(params: Mapping[str, Any]) -> list[str]:
    """The AuthToken inside RuntimeConfig: a secret that the cloud might echo back."""
    runtime = params.get("RuntimeConfig")
    token = runtime.get("AuthToken") if isinstance(runtime, Mapping) else None
    return [token] if isinstance(token, str) else []
