"""What the apply engine needs from a provider: start, stop, announce. Nothing else.

Implementations raise reconciler.errors.ProviderError, classified once by the provider's own
client (retryable | conflict | not_found | terminal); they never retry themselves.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from reconciler.core.model import Announcement

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


class SessionProvider(Protocol):
    name: str

    async def start(self, spec: Mapping[str, Any]) -> None:
        """Start a session from its fully resolved spec."""
        ...

    async def stop(self, provider_ids: Mapping[str, str]) -> None: ...

    async def announce(self, provider_ids: Mapping[str, str], announcement: Announcement) -> None:
        """Speak a one-shot message into the running session."""
        ...

    async def aclose(self) -> None: ...
