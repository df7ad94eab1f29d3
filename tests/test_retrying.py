"""The retry and rate policy with a fake clock and a fake sleep: no test here takes real time.

TokenBucket: the rate holds over any window, bursts are bounded, concurrent callers get
distinct slots. call_with_retries: only retryable ProviderErrors are retried, full-jitter waits
stay under the exponential cap, Retry-After is the floor, attempts and total waiting are capped,
and everything else is raised at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from reconciler.errors import (
    AuthRefused,
    Conflict,
    NotFound,
    ProviderError,
    Terminal,
    Transient,
)
from reconciler.retrying import RetryPolicy, TokenBucket, call_with_retries

RUNS = 200  # repetitions for the properties of random waits


class FakeTime:
    """A clock that only moves when someone sleeps (or the test says so)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Recorder:
    """A sleep that records and returns at once, leaving the clock where it is."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.sleeps.append(seconds)


def free_bucket() -> TokenBucket:
    return TokenBucket(rate=1e9, burst=1_000_000)


def retryable(code: str = "InternalError", retry_after: float | None = None) -> ProviderError:
    return Transient("try again", code=code, status=500, retry_after=retry_after)


def failing(
    errors: list[BaseException], result: str = "done"
) -> tuple[Callable[[], Awaitable[str]], list[int]]:
    """A call that raises the given errors in turn, then returns `result`; counts its calls."""
    calls = [0]

    async def call() -> str:
        calls[0] += 1
        if errors:
            raise errors.pop(0)
        return result

    return call, calls


def always_failing(
    error_factory: Callable[[], BaseException],
) -> tuple[Callable[[], Awaitable[str]], list[int]]:
    calls = [0]

    async def call() -> str:
        calls[0] += 1
        raise error_factory()

    return call, calls


# -- TokenBucket -----------------------------------------------------------------------------


def test_bucket_refuses_a_rate_that_is_not_positive() -> None:
    for rate in (0, -1.0):
        with pytest.raises(ValueError):
            TokenBucket(rate)


def test_bucket_serves_a_burst_at_once_then_one_call_per_interval() -> None:
    time = FakeTime()
    bucket = TokenBucket(10.0, burst=3, clock=time.clock, sleep=time.sleep)
    done: list[float] = []

    async def run() -> None:
        for _ in range(20):
            await bucket.acquire()
            done.append(time.now)

    asyncio.run(run())
    assert done[:3] == [0.0, 0.0, 0.0]
    for index, moment in enumerate(done[3:], start=3):
        assert moment == pytest.approx((index - 2) * 0.1)


@pytest.mark.parametrize(("rate", "burst"), [(1.0, 1), (5.0, 1), (20.0, 4), (3.5, 7)])
def test_bucket_never_exceeds_burst_plus_rate_in_any_window(rate: float, burst: int) -> None:
    time = FakeTime()
    bucket = TokenBucket(rate, burst=burst, clock=time.clock, sleep=time.sleep)
    done: list[float] = []

    async def run() -> None:
        for round_ in range(6):
            for _ in range(25):
                await bucket.acquire()
                done.append(time.now)
            time.now += round_ * 0.37  # idle gaps of various lengths refill the bucket

    asyncio.run(run())
    window = 1.0
    eps = 1e-9
    for start in done:
        inside = sum(1 for moment in done if start <= moment < start + window - eps)
        assert inside <= burst + rate * window + eps
    # ...and an idle bucket refills only up to the burst, never more.
    assert sum(1 for moment in done if moment == done[0]) <= burst


def test_bucket_after_a_long_idle_allows_only_one_burst() -> None:
    time = FakeTime()
    bucket = TokenBucket(2.0, burst=3, clock=time.clock, sleep=time.sleep)

    async def take(count: int) -> list[float]:
        moments = []
        for _ in range(count):
            await bucket.acquire()
            moments.append(time.now)
        return moments

    asyncio.run(take(10))
    time.now += 3600.0
    idle_end = time.now
    moments = asyncio.run(take(5))
    assert moments[:3] == [idle_end] * 3
    assert moments[3] == pytest.approx(idle_end + 0.5)
    assert moments[4] == pytest.approx(idle_end + 1.0)


def test_concurrent_callers_each_get_their_own_slot() -> None:
    clock = FakeTime()
    sleep = Recorder()
    bucket = TokenBucket(4.0, burst=1, clock=clock.clock, sleep=sleep)

    async def run() -> None:
        await asyncio.gather(*(bucket.acquire() for _ in range(20)))

    asyncio.run(run())
    # Everyone asked at the same instant: one went at once, the others got distinct slots
    # a quarter of a second apart, none sharing a slot.
    assert len(sleep.sleeps) == 19
    assert sorted(sleep.sleeps) == pytest.approx([0.25 * i for i in range(1, 20)])


def test_concurrent_callers_with_a_burst_share_it_and_queue_after_it() -> None:
    clock = FakeTime()
    sleep = Recorder()
    bucket = TokenBucket(10.0, burst=5, clock=clock.clock, sleep=sleep)

    async def run() -> None:
        await asyncio.gather(*(bucket.acquire() for _ in range(12)))

    asyncio.run(run())
    # 5 went at once; each of the 7 others got its own slot 0.1 s apart.
    assert sorted(sleep.sleeps) == pytest.approx([0.1 * i for i in range(1, 8)])


# -- call_with_retries -----------------------------------------------------------------------


def test_retryable_errors_are_retried_until_the_call_succeeds() -> None:
    sleep = Recorder()
    seen: list[BaseException] = []
    errors: list[BaseException] = [retryable(), retryable("FlowLimitExceeded"), retryable()]
    expected = list(errors)
    call, calls = failing(errors)
    result = asyncio.run(
        call_with_retries(
            call,
            RetryPolicy(max_attempts=5, base_seconds=0.01),
            free_bucket(),
            sleep=sleep,
            on_retry=seen.append,
        )
    )
    assert result == "done"
    assert calls[0] == 4
    assert len(sleep.sleeps) == 3
    assert seen == expected


@pytest.mark.parametrize(
    "error",
    [
        Terminal("bad parameter", code="InvalidParameter", status=400),
        AuthRefused("refused", code="SignatureDoesNotMatch", status=401),
        Conflict("already started", code="TaskAlreadyExists"),
        NotFound("no such task", code="ActiveTaskNotFound"),
        ValueError("not a provider error at all"),
    ],
    ids=["terminal", "auth", "conflict", "not-found", "other-exception"],
)
def test_anything_not_retryable_is_raised_at_once(error: BaseException) -> None:
    sleep = Recorder()
    call, calls = failing([error])
    with pytest.raises(type(error)) as raised:
        asyncio.run(call_with_retries(call, RetryPolicy(), free_bucket(), sleep=sleep))
    assert raised.value is error
    assert calls[0] == 1
    assert sleep.sleeps == []


def test_retry_on_narrows_what_is_retried() -> None:
    sleep = Recorder()

    def only_throttles(error: BaseException) -> bool:
        return isinstance(error, ProviderError) and error.code == "FlowLimitExceeded"

    server_error = retryable("InternalError")
    call, calls = failing([retryable("FlowLimitExceeded"), server_error])
    with pytest.raises(ProviderError) as raised:
        asyncio.run(
            call_with_retries(
                call, RetryPolicy(), free_bucket(), sleep=sleep, retry_on=only_throttles
            )
        )
    assert raised.value is server_error
    assert calls[0] == 2
    assert len(sleep.sleeps) == 1


def test_full_jitter_waits_stay_under_the_exponential_cap() -> None:
    policy = RetryPolicy(max_attempts=12, max_wait_seconds=1e6, base_seconds=0.1, cap_seconds=2.0)
    bounds = [min(policy.cap_seconds, policy.base_seconds * 2**n) for n in range(11)]
    all_waits: list[list[float]] = []
    for _ in range(RUNS):
        sleep = Recorder()
        call, calls = always_failing(retryable)
        with pytest.raises(ProviderError):
            asyncio.run(call_with_retries(call, policy, free_bucket(), sleep=sleep))
        assert calls[0] == policy.max_attempts
        assert len(sleep.sleeps) == policy.max_attempts - 1
        for wait, bound in zip(sleep.sleeps, bounds, strict=True):
            assert 0.0 <= wait <= bound + 1e-12
        all_waits.append(sleep.sleeps)
    # Full jitter, not a fixed ladder: waits spread over their whole window.
    for n, bound in enumerate(bounds):
        column = [waits[n] for waits in all_waits]
        assert min(column) < bound * 0.25
        assert max(column) > bound * 0.75


def test_retry_after_is_the_floor_of_every_wait() -> None:
    policy = RetryPolicy(max_attempts=6, max_wait_seconds=100.0, base_seconds=0.001)
    for _ in range(RUNS // 4):
        sleep = Recorder()
        call, calls = always_failing(lambda: retryable("FlowLimitExceeded", retry_after=1.5))
        with pytest.raises(ProviderError):
            asyncio.run(call_with_retries(call, policy, free_bucket(), sleep=sleep))
        assert calls[0] == 6
        assert len(sleep.sleeps) == 5
        assert all(wait >= 1.5 for wait in sleep.sleeps)


def test_a_short_retry_after_does_not_shorten_the_backoff() -> None:
    policy = RetryPolicy(max_attempts=4, max_wait_seconds=100.0, base_seconds=4.0, cap_seconds=4.0)
    for _ in range(RUNS // 4):
        sleep = Recorder()
        call, _ = always_failing(lambda: retryable(retry_after=0.5))
        with pytest.raises(ProviderError):
            asyncio.run(call_with_retries(call, policy, free_bucket(), sleep=sleep))
        assert all(0.5 <= wait <= 4.0 for wait in sleep.sleeps)


def test_the_attempt_cap_ends_the_retries_with_the_last_error() -> None:
    sleep = Recorder()
    errors: list[BaseException] = [retryable() for _ in range(10)]
    last = errors[4]
    call, calls = failing(errors)
    with pytest.raises(ProviderError) as raised:
        asyncio.run(
            call_with_retries(
                call, RetryPolicy(max_attempts=5, base_seconds=0.01), free_bucket(), sleep=sleep
            )
        )
    assert raised.value is last
    assert calls[0] == 5
    assert len(sleep.sleeps) == 4


def test_one_attempt_means_no_retry() -> None:
    sleep = Recorder()
    call, calls = always_failing(retryable)
    with pytest.raises(ProviderError):
        asyncio.run(
            call_with_retries(call, RetryPolicy(max_attempts=1), free_bucket(), sleep=sleep)
        )
    assert calls[0] == 1
    assert sleep.sleeps == []


@pytest.mark.parametrize("budget", [0.05, 0.7, 3.0, 30.0])
def test_the_total_wait_never_exceeds_the_budget(budget: float) -> None:
    policy = RetryPolicy(
        max_attempts=1000, max_wait_seconds=budget, base_seconds=0.2, cap_seconds=10.0
    )
    for _ in range(RUNS // 2):
        sleep = Recorder()
        call, calls = always_failing(retryable)
        with pytest.raises(ProviderError):
            asyncio.run(call_with_retries(call, policy, free_bucket(), sleep=sleep))
        assert sum(sleep.sleeps) <= budget + 1e-9
        assert calls[0] == len(sleep.sleeps) + 1
        assert calls[0] < policy.max_attempts  # the budget, not the attempt cap, ended it


def test_a_retry_after_beyond_the_budget_ends_the_retries() -> None:
    policy = RetryPolicy(max_attempts=50, max_wait_seconds=3.0, base_seconds=0.001)
    sleep = Recorder()
    call, calls = always_failing(lambda: retryable("FlowLimitExceeded", retry_after=2.0))
    with pytest.raises(ProviderError):
        asyncio.run(call_with_retries(call, policy, free_bucket(), sleep=sleep))
    # One wait of 2 s fits in 3 s; a second would not, and waiting less than asked is useless.
    assert sleep.sleeps == [2.0]
    assert calls[0] == 2


def test_the_budget_is_counted_in_slept_time_not_wall_time() -> None:
    """A fake sleep takes no real time, yet the budget still ends the retries."""
    policy = RetryPolicy(max_attempts=10_000, max_wait_seconds=5.0, base_seconds=1.0)
    sleep = Recorder()
    call, calls = always_failing(retryable)
    with pytest.raises(ProviderError):
        asyncio.run(call_with_retries(call, policy, free_bucket(), sleep=sleep))
    assert sum(sleep.sleeps) <= 5.0 + 1e-9
    assert calls[0] < 10_000


def test_every_attempt_takes_a_token_from_the_bucket() -> None:
    clock = FakeTime()
    bucket_sleep = Recorder()
    bucket = TokenBucket(1.0, burst=1, clock=clock.clock, sleep=bucket_sleep)
    call, calls = failing([retryable(), retryable()])
    result = asyncio.run(
        call_with_retries(call, RetryPolicy(base_seconds=0.01), bucket, sleep=Recorder())
    )
    assert result == "done"
    assert calls[0] == 3
    # The clock stood still, so the second and third attempts each waited for their own slot.
    assert bucket_sleep.sleeps == pytest.approx([1.0, 2.0])
