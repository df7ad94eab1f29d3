"""The retry and rate policy: small composable pieces around tenacity.

- TokenBucket: one per provider account, shared by every call of an apply (GCRA form: each
  caller reserves the next free slot, so callers are served in order and never busy-wait).
- RetryPolicy: full-jitter exponential backoff, the server's Retry-After as the floor, a cap on
  attempts and on the total time spent waiting. Only errors classified retryable are retried.
Clock and sleep are injectable so backoff tests take no real time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_random_exponential

from reconciler.errors import ErrorKind, ProviderError

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
        return isinstance(error, ProviderError) and error.kind is ErrorKind.RETRYABLE


class _RetryAfterFloor:
    """Full jitter, never shorter than what the server asked for."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.jitter = wait_random_exponential(
            multiplier=policy.base_seconds, max=policy.cap_seconds
        )
        self.cap = policy.cap_seconds

    def __call__(self, state: RetryCallState) -> float:
        wait = float(self.jitter(state))
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, ProviderError) and error.retry_after is not None:
            wait = max(wait, min(error.retry_after, self.cap * 3))
        return wait


class _WaitBudget:
    """Stop once the waits so far have used the budget (counted in slept time, so the cap holds
    under a fake clock too)."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy

    def __call__(self, state: RetryCallState) -> bool:
        return (
            state.attempt_number >= self.policy.max_attempts
            or state.idle_for >= self.policy.max_wait_seconds
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
