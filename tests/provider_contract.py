"""The behaviour every SessionProvider keeps, as async checks over a provider case.

test_provider_contract.py runs each check in CONTRACT for every provider against the emulator,
so Volcengine and Alibaba Cloud are held to the same answers: start → (observe) → announce →
stop → stop again is NotFound; ids are what later calls address the session by; a provider
that can observe sees its own session running and then ended, and lists it with our tag.
Observing checks are skipped for providers that cannot observe (Volcengine).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from reconciler.core.model import Announcement
from reconciler.errors import NotFound, Terminal
from reconciler.providers.base import Liveness, ObservingProvider, Owner, SessionProvider


@dataclass(frozen=True)
class ProviderCase:
    """How to reach one provider on the emulator, and how its sessions are declared."""

    name: str
    make: Callable[[], SessionProvider]
    spec: Callable[[int], dict[str, Any]]  # the n-th distinct session's resolved spec
    identity: Callable[[Mapping[str, Any]], dict[str, str]]  # declared identity ids of a spec
    scope: Callable[[Mapping[str, Any]], dict[str, str]]  # list_live scope of a spec
    live_count: Callable[[], int]  # how many sessions the emulator runs now


def owner(n: int, attempt: str = "a1") -> Owner:
    return Owner("contract-lineage", f"session-{n}", attempt)


async def _started(provider: SessionProvider, case: ProviderCase, n: int) -> dict[str, str]:
    spec = case.spec(n)
    returned = await provider.start(spec, owner(n))
    return {**case.identity(spec), **returned}


async def check_start_announce_stop_then_stop_again_is_not_found(
    provider: SessionProvider, case: ProviderCase
) -> None:
    ids = await _started(provider, case, 1)
    assert case.live_count() == 1
    await provider.announce(ids, Announcement("hello", "Welcome, everyone."))
    await provider.stop(ids)
    assert case.live_count() == 0
    with pytest.raises(NotFound):
        await provider.stop(ids)


async def check_sessions_are_independent(provider: SessionProvider, case: ProviderCase) -> None:
    first = await _started(provider, case, 1)
    second = await _started(provider, case, 2)
    assert first != second and case.live_count() == 2
    await provider.stop(first)
    assert case.live_count() == 1
    await provider.announce(second, Announcement("still-here", "Still here."))
    await provider.stop(second)


async def check_announcing_to_a_stopped_session_fails(
    provider: SessionProvider, case: ProviderCase
) -> None:
    ids = await _started(provider, case, 1)
    await provider.stop(ids)
    with pytest.raises((NotFound, Terminal)):
        await provider.announce(ids, Announcement("late", "Too late."))


async def check_observe_sees_running_then_ended(
    provider: SessionProvider, case: ProviderCase
) -> None:
    if not isinstance(provider, ObservingProvider):
        pytest.skip(f"{case.name} cannot observe the cloud")
    ids = await _started(provider, case, 1)
    running = await provider.observe(ids)
    assert running.liveness is Liveness.RUNNING and running.status
    await provider.stop(ids)
    ended = await provider.observe(ids)
    assert ended.liveness is Liveness.ENDED


async def check_list_live_shows_our_tag_until_stopped(
    provider: SessionProvider, case: ProviderCase
) -> None:
    if not isinstance(provider, ObservingProvider):
        pytest.skip(f"{case.name} cannot list the cloud")
    spec = case.spec(1)
    ids = {**case.identity(spec), **await provider.start(spec, owner(1, "a7"))}
    live = await provider.list_live(case.scope(spec))
    assert [s.owner for s in live] == [owner(1, "a7")]
    assert all(
        live[0].identity[k] == v for k, v in case.identity(spec).items() if k in live[0].identity
    )
    await provider.stop(ids)
    assert await provider.list_live(case.scope(spec)) == []


Check = Callable[[SessionProvider, ProviderCase], Awaitable[None]]

CONTRACT: tuple[Check, ...] = (
    check_start_announce_stop_then_stop_again_is_not_found,
    check_sessions_are_independent,
    check_announcing_to_a_stopped_session_fails,
    check_observe_sees_running_then_ended,
    check_list_live_shows_our_tag_until_stopped,
)
