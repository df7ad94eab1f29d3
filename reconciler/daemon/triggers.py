"""The daemon's "look again" queue: any number of triggers become one next reconcile.

Every source of change — a file event, SIGHUP, the resync timer, an accepted cloud callback —
only says "look again" (the reconcile is level-triggered: it reads everything anyway), so there is
no point in one run per event. Triggers posted while a run is under way are kept and make exactly
one next run; a short debounce lets a burst (an editor's save is several events, `git pull` is
many) settle first, and a cap on that wait keeps a steady stream of events from postponing the
run forever.

Used from the event loop only (signal handlers, the file watcher and the HTTP server all run
there): asyncio's Event is not thread-safe, and nothing here needs a lock for that reason.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

DEBOUNCE_SECONDS = 0.05
MAX_DELAY_SECONDS = 1.0


class Source(StrEnum):
    FILE = "file"
    SIGHUP = "sighup"
    RESYNC = "resync"
    CALLBACK = "callback"
    START = "start"  # the first pass after the daemon starts or becomes leader
    RETRY = "retry"  # a backed-off session is due again


@dataclass(frozen=True, slots=True)
class Trigger:
    """One "look again": where it came from, and what it is about when it says (a callback
    does; a file event or the timer does not): the session's name where known (an Aliyun
    callback carries our owner tag), else the provider's task identity (a Volcengine callback
    names AppId/RoomId/TaskId, the identity records are keyed by)."""

    source: Source
    session: str | None = None
    provider: str | None = None
    identity: str | None = None
    at: str | None = None  # when the event it answers happened (ISO 8601 UTC), where known


@dataclass(frozen=True, slots=True)
class Batch:
    """The triggers one run answers, counted by (source, session): a burst of a thousand file
    events is one entry, not a thousand."""

    counts: Mapping[Trigger, int] = field(default_factory=dict)

    @property
    def sources(self) -> frozenset[Source]:
        return frozenset(trigger.source for trigger in self.counts)

    @property
    def sessions(self) -> frozenset[str]:
        """The sessions some trigger named (callbacks): worth observing first."""
        return frozenset(t.session for t in self.counts if t.session is not None)

    @property
    def identities(self) -> frozenset[tuple[str, str]]:
        """The (provider, task identity) pairs some trigger named (Volcengine callbacks)."""
        return frozenset(
            (t.provider, t.identity)
            for t in self.counts
            if t.provider is not None and t.identity is not None
        )

    @property
    def task_ends(self) -> dict[tuple[str, str], str | None]:
        """(provider, task identity) → the latest time a callback said that task ended (None
        when no such callback said when)."""
        ends: dict[tuple[str, str], str | None] = {}
        for t in self.counts:
            if t.source is Source.CALLBACK and t.provider is not None and t.identity is not None:
                key = (t.provider, t.identity)
                known = [at for at in (ends.get(key), t.at) if at is not None]
                ends[key] = max(known) if known else None
        return ends

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class TriggerQueue:
    """post() from anywhere on the loop; one consumer awaits next_batch() between runs."""

    def __init__(
        self,
        *,
        debounce: float = DEBOUNCE_SECONDS,
        max_delay: float = MAX_DELAY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if debounce < 0 or max_delay < debounce:
            raise ValueError("need 0 <= debounce <= max_delay")
        self._debounce = debounce
        self._max_delay = max_delay
        self._clock = clock
        self._sleep = sleep
        self._pending: Counter[Trigger] = Counter()
        self._last_post = 0.0
        self._first_post = 0.0
        self._arrived = asyncio.Event()
        self._closed = False

    def post(self, trigger: Trigger) -> bool:
        """Ask for a run; False once the queue is closed (shutting down: nothing more starts)."""
        if self._closed:
            return False
        now = self._clock()
        if not self._pending:
            self._first_post = now
        self._pending[trigger] += 1
        self._last_post = now
        self._arrived.set()
        return True

    def close(self) -> None:
        """Stop taking triggers; a waiting next_batch() returns None, and so does every later
        one. What was pending is dropped: the daemon is stopping, and the next one to start
        reads everything anyway."""
        self._closed = True
        self._pending.clear()
        self._arrived.set()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def pending(self) -> int:
        return self._pending.total()

    async def next_batch(self) -> Batch | None:
        """Wait for a trigger, then until `debounce` has passed with no new one (at most
        `max_delay` after the first), and take everything pending as one batch. None when
        closed."""
        while not self._pending:
            if self._closed:
                return None
            self._arrived.clear()
            await self._arrived.wait()
        while True:
            if self._closed:
                return None
            deadline = min(self._last_post + self._debounce, self._first_post + self._max_delay)
            wait = deadline - self._clock()
            if wait <= 0:
                break
            await self._sleep(wait)
        batch = Batch(dict(self._pending))
        self._pending.clear()
        return batch
