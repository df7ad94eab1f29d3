"""Refresh: ask the providers that can see the cloud what became of each record, before
planning (DESIGN: files × records × observations → plan).

Each record of an observing provider gets the cloud's answer (running / ended by itself /
unknown) under that provider's token bucket and retry policy; the live sessions carrying our
owner tag are listed per scope (Aliyun: per AIAgentId) for the plan's note about untracked
ones. An observation that cannot be had (retries ran out, a refusal) is `unknown` with the
reason: the plan then trusts the record, as it does for a provider that cannot observe.
Refused credentials fail the refresh: nothing could be seen, and the apply would fail anyway.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TypeVar

from reconciler.core.model import (
    DesiredSession,
    JournalEntry,
    JournalOp,
    Liveness,
    LiveSession,
    Observation,
    SessionRecord,
)
from reconciler.engine.calls import OnCall, ignore_calls, reported
from reconciler.errors import AuthRefused, ProviderError, SettingsError
from reconciler.providers.base import ObservingProvider, ProviderSpec, SessionProvider
from reconciler.retrying import RetryPolicy, Sleep, TokenBucket, call_with_retries

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Refreshed:
    records: list[SessionRecord]  # every record, observing ones with their new observation
    live: list[LiveSession] = field(default_factory=list)
    observed: int = 0  # how many records were asked about


@dataclass
class Refresher:
    providers: Mapping[str, SessionProvider]  # built on first use (credentials only if needed)
    registry: Mapping[str, ProviderSpec]
    now: Callable[[], str]
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    buckets: Mapping[str, TokenBucket] = field(default_factory=dict)
    parallelism: int = 16
    sleep: Sleep = asyncio.sleep
    before_call: Callable[[], None] = lambda: None  # the writer lock's check, for apply
    on_call: OnCall = ignore_calls  # every provider request, for metrics and logs

    async def refresh(
        self,
        records: Sequence[SessionRecord],
        desired: Sequence[DesiredSession] = (),
        pending: Sequence[JournalEntry] = (),
    ) -> Refreshed:
        observing = [r for r in records if self._observes(r.provider)]
        slots = asyncio.Semaphore(self.parallelism)

        async def in_slot(run: Callable[[], Awaitable[T]]) -> T:
            async with slots:
                return await run()

        observations = await asyncio.gather(
            *(in_slot(partial(self._observe, record)) for record in observing)
        )
        by_name = {r.name: o for r, o in zip(observing, observations, strict=True)}
        refreshed = [
            replace(r, observation=by_name[r.name]) if r.name in by_name else r for r in records
        ]
        scopes = sorted(self._scopes(records, desired))
        listed = await asyncio.gather(
            *(in_slot(partial(self._list, provider, scope)) for provider, scope in scopes)
        )
        # A Start still pending (its outcome unknown) is not untracked: recovery settles it.
        in_flight = _pending_attempts(pending)
        live = [
            session
            for sessions in listed
            for session in sessions
            if session.owner is None or session.owner.attempt not in in_flight
        ]
        return Refreshed(refreshed, live, len(observing))

    def _observes(self, provider: str) -> bool:
        spec = self.registry.get(provider)
        return spec is not None and spec.observes

    def _observing(self, name: str) -> ObservingProvider:
        try:
            provider = self.providers[name]
        except SettingsError as error:
            raise SettingsError(
                f"{error}\n(refreshing the records needs them; --refresh=false plans from the "
                "records alone)"
            ) from None
        if not isinstance(provider, ObservingProvider):
            raise TypeError(f"{name} is registered as observing but cannot observe")
        return provider

    async def _observe(self, record: SessionRecord) -> Observation:
        provider = self._observing(record.provider)
        try:
            return await self._call(
                record.provider,
                lambda: provider.observe(record.provider_ids),
                action="observe",
                session=record.name,
            )
        except AuthRefused:
            raise
        except ProviderError as error:
            return Observation(Liveness.UNKNOWN, "", self.now(), reason=str(error))

    async def _list(
        self, provider_name: str, scope: tuple[tuple[str, str], ...]
    ) -> Sequence[LiveSession]:
        provider = self._observing(provider_name)
        try:
            return await self._call(
                provider_name, lambda: provider.list_live(dict(scope)), action="list"
            )
        except AuthRefused:
            raise
        except ProviderError:
            return ()  # the note about untracked sessions is a courtesy, not a verdict

    def _scopes(
        self, records: Iterable[SessionRecord], desired: Iterable[DesiredSession]
    ) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
        found: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
        ids = [(r.provider, r.provider_ids) for r in records]
        ids += [
            (s.provider, self.registry[s.provider].rules.identity_ids(s.spec))
            for s in desired
            if self._observes(s.provider)
        ]
        for provider, values in ids:
            spec = self.registry.get(provider)
            if spec is None or not spec.observes or not spec.list_scope:
                continue
            if all(values.get(name) for name in spec.list_scope):
                found.add((provider, tuple((name, values[name]) for name in spec.list_scope)))
        return found

    async def _call(
        self,
        provider: str,
        call: Callable[[], Awaitable[T]],
        *,
        action: str,
        session: str | None = None,
    ) -> T:
        bucket = self.buckets.get(provider) or TokenBucket(rate=1_000_000)
        request = reported(provider, action, call, self.on_call, session)

        async def checked() -> T:
            await asyncio.to_thread(self.before_call)  # a lease check is a round trip
            return await request()

        return await call_with_retries(checked, self.policy, bucket, sleep=self.sleep)


def _pending_attempts(pending: Sequence[JournalEntry]) -> set[str]:
    attempts: set[str] = set()
    for entry in pending:
        if entry.op is not JournalOp.START:
            continue
        try:
            attempt = json.loads(entry.payload_json).get("attempt")
        except (ValueError, AttributeError):
            continue
        if isinstance(attempt, str):
            attempts.add(attempt)
    return attempts
