"""The retry and rate policy: small composable pieces around tenacity.

- TokenBucket: one per provider account, shared by every call of an apply (GCRA form: each
  caller reserves the next free slot, so callers are served in order and never busy-wait).
- RetryPolicy: full-jitter exponential backoff, the server's Retry-After as the floor, a cap on
  attempts and on the total time spent waiting. Only Transient errors (Throttled among them)
  are retried.
Clock and sleep are injectable so backoff tests take no real time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_random_exponential

from reconciler.errors import ProviderError, Transient

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]


class TokenBucket:
    """`rate` calls per second with bursts of up to `burst` calls."""

    def __init__(
        self,
        rate: float,
        burst: int = 1,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.interval = 1.0 / rate
        self.tolerance = (max(1, burst) - 1) * self.interval
        self.clock = clock
        self.sleep = sleep
        self._theoretical_arrival = 0.0

    async def acquire(self) -> None:
        now = self.clock()
        arrival = max(self._theoretical_arrival, now)
        # Reserve before sleeping: no await between reading and writing, so concurrent
        # callers each get their own slot.
        self._theoretical_arrival = arrival + self.interval
        wait = arrival - self.tolerance - now
        if wait > 0:
            await self.sleep(wait)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 8
    max_wait_seconds: float = 120.0  # total time one call may spend waiting between attempts
    base_seconds: float = 0.3  # the official SDK starts at 300 ms
    cap_seconds: float = 20.0  # the longest single wait

    def is_retryable(self, error: BaseException) -> bool:
        return isinstance(error, Transient)


def _retry_after_floor(state: RetryCallState, policy: RetryPolicy) -> float | None:
    """The wait the server asked for (bounded to 3 × the longest single wait), if it did."""
    error = state.outcome.exception() if state.outcome else None
    if isinstance(error, ProviderError) and error.retry_after is not None:
        return min(error.retry_after, policy.cap_seconds * 3)
    return None


class _RetryAfterFloor:
    """Full jitter, never shorter than what the server asked for, never past the budget."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.jitter = wait_random_exponential(
            multiplier=policy.base_seconds, max=policy.cap_seconds
        )
        self.policy = policy

    def __call__(self, state: RetryCallState) -> float:
        remaining = max(0.0, self.policy.max_wait_seconds - state.idle_for)
        wait = min(float(self.jitter(state)), remaining)
        floor = _retry_after_floor(state, self.policy)
        # A floor beyond the remaining budget never gets here: _WaitBudget gives up first.
        return wait if floor is None else max(wait, floor)


class _WaitBudget:
    """Stop at the attempt cap, or once the waits would go past the budget (counted in slept
    time, so the cap holds under a fake clock too). The budget holds for the total: the last
    wait is shortened to fit, and a Retry-After longer than what is left ends the retries."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy

    def __call__(self, state: RetryCallState) -> bool:
        remaining = self.policy.max_wait_seconds - state.idle_for
        floor = _retry_after_floor(state, self.policy)
        return (
            state.attempt_number >= self.policy.max_attempts
            or remaining <= 0
            or (floor is not None and floor > remaining)
        )


async def call_with_retries(
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    bucket: TokenBucket,
    *,
    sleep: Sleep = asyncio.sleep,
    retry_on: Callable[[BaseException], bool] | None = None,
    on_retry: Callable[[BaseException], None] | None = None,
) -> T:
    """Run `call` under the bucket, retrying what the policy calls retryable."""

    def before_sleep(state: RetryCallState) -> None:
        if on_retry is not None and state.outcome is not None:
            error = state.outcome.exception()
            if error is not None:
                on_retry(error)

    retrying = AsyncRetrying(
        stop=_WaitBudget(policy),
        wait=_RetryAfterFloor(policy),
        retry=retry_if_exception(retry_on or policy.is_retryable),
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            await bucket.acquire()
            return await call()
    raise AssertionError("tenacity ends with a result or an exception")
