"""What both cloud clients share below their wire formats: one keep-alive connection pool per
client, secret values masked out of error text, and transport failures turned into Transient
with `sent` decided in one place.

Not a provider: the import-linter independence contract keeps providers.volcengine and
providers.aliyun apart, and both may lean on this module.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType
from typing import Self

import httpx

from reconciler.errors import Transient

# Shorter values would mask ordinary words in messages ("on", "id") and protect nothing.
MIN_SECRET_LENGTH = 4
# Failures before a byte of the request was written: no connection was made (refused, DNS
# failure, connect timeout) or none was free in the pool. Anything later (a read timeout, a
# dropped connection, a write error half-way) may have reached the cloud.
NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class SecretMask:
    """Masks known secret values in text that may end up in an exception or a log line."""

    def __init__(self, values: Iterable[str]) -> None:
        # Longest first, so a secret containing another is masked whole.
        self._values = sorted({v for v in values if len(v) >= MIN_SECRET_LENGTH}, key=len)[::-1]

    def __call__(self, text: str) -> str:
        for value in self._values:
            text = text.replace(value, "***")
        return text


def transport_failure(action: str, error: httpx.TransportError, mask: SecretMask) -> Transient:
    """A transport error as the engine sees it: retryable, and certainly not delivered only
    when it failed before sending."""
    detail = mask(f"{action}: {type(error).__name__}: {error}")
    return Transient(detail, sent=not isinstance(error, NEVER_SENT))


class PooledHttp:
    """A client's connection pool, its own unless the caller hands one in (the client then
    leaves closing it to the caller). Subclasses call `_open_pool` from their __init__."""

    _http: httpx.AsyncClient
    _timeout: httpx.Timeout
    _owns_http: bool

    def _open_pool(
        self, http: httpx.AsyncClient | None, timeout: float, max_connections: int
    ) -> None:
        self._timeout = httpx.Timeout(timeout)
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(
            timeout=self._timeout,
            limits=httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=max_connections,
                keepalive_expiry=30.0,
            ),
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool, unless it was handed in by the caller."""
        if self._owns_http:
            await self._http.aclose()
