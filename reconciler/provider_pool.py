"""The providers of one run: built from the settings on first use, one token bucket each.

Built lazily, so a run with nothing to call needs no credentials, and a provider whose
settings are missing is an error only when the run calls it. Each provider is one account
with its own rate limit, so each gets its own bucket of RECONCILER_RATE_LIMIT per second.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from reconciler.providers.base import SessionProvider
from reconciler.providers.registry import PROVIDERS
from reconciler.retrying import TokenBucket
from reconciler.settings import Settings


class ProviderPool(Mapping[str, SessionProvider]):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.built: dict[str, SessionProvider] = {}
        self.buckets = {name: TokenBucket(settings.rate_limit) for name in PROVIDERS}

    def __getitem__(self, name: str) -> SessionProvider:
        if name not in self.built:
            spec = PROVIDERS[name]
            self.built[name] = spec.build(self.settings, self.settings.parallelism)
        return self.built[name]

    def __iter__(self) -> Iterator[str]:
        return iter(PROVIDERS)

    def __len__(self) -> int:
        return len(PROVIDERS)

    async def aclose(self) -> None:
        for provider in self.built.values():
            await provider.aclose()
        self.built.clear()
