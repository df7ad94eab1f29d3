"""The coalescing trigger queue: one run per burst, nothing lost, debounce on an injected clock."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.daemon.triggers import Batch, Source, Trigger, TriggerQueue


class FakeClock:
    """Time that moves only when the queue sleeps; `during_sleep` runs inside each sleep, as
    the event loop would run other tasks then."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []
        self.during_sleep: Callable[[], None] = lambda: None

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        self.during_sleep()
        await asyncio.sleep(0)


def _queue(clock: FakeClock, debounce: float = 0.05, max_delay: float = 1.0) -> TriggerQueue:
    return TriggerQueue(debounce=debounce, max_delay=max_delay, clock=clock, sleep=clock.sleep)


FILE = Trigger(Source.FILE)
RESYNC = Trigger(Source.RESYNC)


def test_one_trigger_waits_one_debounce_then_makes_one_batch() -> None:
    async def main() -> None:
        clock = FakeClock()
        queue = _queue(clock)
        queue.post(FILE)
        batch = await queue.next_batch()
        assert batch == Batch({FILE: 1})
        assert clock.slept == [pytest.approx(0.05)]
        assert queue.pending == 0

    asyncio.run(main())


def test_a_burst_settles_before_the_run_and_becomes_one_batch() -> None:
    async def main() -> None:
        clock = FakeClock()
        queue = _queue(clock)
        task = Trigger(Source.CALLBACK, provider="volcengine", identity="app/room/task")
        posts = iter([FILE, FILE, Trigger(Source.CALLBACK, "lobby"), FILE, task])
        # Each event of the burst arrives while the queue waits out the debounce.
        clock.during_sleep = lambda: next((queue.post(t) for t in posts), None)
        queue.post(FILE)
        batch = await queue.next_batch()
        assert batch is not None
        assert batch.counts == {FILE: 4, Trigger(Source.CALLBACK, "lobby"): 1, task: 1}
        assert batch.total == 6 and batch.sessions == {"lobby"}
        assert batch.identities == {("volcengine", "app/room/task")}
        assert batch.sources == {Source.FILE, Source.CALLBACK}
        assert len(clock.slept) == 6  # the quiet period restarted with every event

    asyncio.run(main())


def test_a_steady_stream_cannot_postpone_the_run_past_max_delay() -> None:
    async def main() -> None:
        clock = FakeClock()
        queue = _queue(clock, debounce=0.05, max_delay=0.2)
        clock.during_sleep = lambda: queue.post(FILE)  # a new event in every quiet period
        start = clock.now
        queue.post(FILE)
        batch = await queue.next_batch()
        assert batch is not None and batch.total > 1
        assert clock.now - start == pytest.approx(0.2)

    asyncio.run(main())


def test_triggers_during_a_run_make_exactly_one_next_run() -> None:
    async def main() -> None:
        clock = FakeClock()
        queue = _queue(clock)
        queue.post(RESYNC)
        first = await queue.next_batch()
        assert first == Batch({RESYNC: 1})
        # The "run": meanwhile a file event, SIGHUP and two callbacks arrive.
        for trigger in [FILE, Trigger(Source.SIGHUP), Trigger(Source.CALLBACK, "a"), FILE]:
            queue.post(trigger)
        second = await queue.next_batch()
        assert second is not None and second.total == 4
        # Nothing more was posted: the consumer waits instead of running again.
        third = asyncio.ensure_future(queue.next_batch())
        await asyncio.sleep(0)
        assert not third.done()
        queue.post(RESYNC)
        assert await third == Batch({RESYNC: 1})

    asyncio.run(main())


def test_close_wakes_the_consumer_and_refuses_new_triggers() -> None:
    async def main() -> None:
        clock = FakeClock()
        queue = _queue(clock)
        waiting = asyncio.ensure_future(queue.next_batch())
        await asyncio.sleep(0)
        queue.close()
        assert await waiting is None
        assert queue.post(FILE) is False
        assert await queue.next_batch() is None

    asyncio.run(main())


def test_close_during_the_debounce_ends_without_a_batch() -> None:
    async def main() -> None:
        clock = FakeClock()
        queue = _queue(clock)
        clock.during_sleep = queue.close
        queue.post(FILE)
        assert await queue.next_batch() is None

    asyncio.run(main())


def test_bad_timings_are_refused() -> None:
    with pytest.raises(ValueError):
        TriggerQueue(debounce=2, max_delay=1)


# Each step: post some triggers while the consumer waits, or let the consumer take a batch.
_steps = st.lists(
    st.one_of(
        st.lists(st.sampled_from(list(Source)), min_size=1, max_size=5).map(lambda s: ("post", s)),
        st.just(("run", [])),
    ),
    max_size=30,
)


@settings(max_examples=100, deadline=None)
@given(steps=_steps)
def test_no_trigger_is_ever_lost_and_no_run_is_empty(steps: list[tuple[str, list[Source]]]) -> None:
    async def main() -> None:
        clock = FakeClock()
        queue = _queue(clock)
        posted = 0
        taken: list[Batch] = []
        for action, sources in steps:
            if action == "post":
                for source in sources:
                    queue.post(Trigger(source))
                posted += len(sources)
            elif queue.pending:
                batch = await queue.next_batch()
                assert batch is not None
                taken.append(batch)
        if queue.pending:
            last = await queue.next_batch()
            assert last is not None
            taken.append(last)
        assert all(batch.total > 0 for batch in taken)
        assert sum(batch.total for batch in taken) == posted

    asyncio.run(main())


def test_with_the_real_clock_a_producer_and_a_consumer_agree() -> None:
    async def main() -> None:
        queue = TriggerQueue(debounce=0.01, max_delay=0.05)
        received: list[int] = []

        async def consume() -> None:
            while (batch := await queue.next_batch()) is not None:
                received.append(batch.total)
                await asyncio.sleep(0.005)  # a "run"

        consumer = asyncio.create_task(consume())
        for index in range(200):
            queue.post(Trigger(Source.FILE if index % 2 else Source.CALLBACK, f"s{index % 3}"))
            await asyncio.sleep(0.0005)
        while queue.pending:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.02)
        queue.close()
        await consumer
        assert sum(received) == 200

    asyncio.run(main())
