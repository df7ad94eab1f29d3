"""Per-session backoff: a session that keeps failing is retried less and less often, on its own.

A failing session (a Start the cloud refuses, a Stop that times out) would otherwise be tried on
every pass — every file save, every callback — spending the account's rate limit and filling
the logs, while the others wait behind it. After each failure a session waits exponentially
longer before its next attempt (1 s, 2 s, 4 s ... up to 5 minutes), with "full jitter" (a
random share of that delay, at least half), so that many sessions that failed together do not
come back together. A success forgets the failures. Only the failing session waits: the others
are planned and applied as usual (the pass leaves its actions out, nothing more).

Pure: the clock and the randomness are given.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

FIRST_DELAY_SECONDS = 1.0
MAX_DELAY_SECONDS = 300.0


@dataclass(frozen=True, slots=True)
class Retry:
    failures: int
    not_before: float  # monotonic time of the next attempt
    error: str


class SessionBackoff:
    def __init__(
        self,
        *,
        first: float = FIRST_DELAY_SECONDS,
        ceiling: float = MAX_DELAY_SECONDS,
        uniform: Callable[[float, float], float] = random.uniform,
    ) -> None:
        if not 0 < first <= ceiling:
            raise ValueError("need 0 < first <= ceiling")
        self._first = first
        self._ceiling = ceiling
        self._uniform = uniform
        self._retries: dict[str, Retry] = {}

    def failed(self, name: str, now: float, error: str) -> Retry:
        """One more failure of this session: when it may be tried again."""
        failures = self._retries[name].failures + 1 if name in self._retries else 1
        delay = min(self._ceiling, self._first * 2 ** (failures - 1))
        retry = Retry(failures, now + self._uniform(delay / 2, delay), error)
        self._retries[name] = retry
        return retry

    def succeeded(self, name: str) -> None:
        self._retries.pop(name, None)

    def forget_except(self, names: Iterable[str]) -> None:
        """Drop sessions that are neither declared nor recorded any more."""
        keep = set(names)
        for name in [n for n in self._retries if n not in keep]:
            del self._retries[name]

    def waiting(self, now: float) -> frozenset[str]:
        """The sessions whose next attempt is not due yet."""
        return frozenset(name for name, r in self._retries.items() if r.not_before > now)

    def next_due(self, now: float) -> float | None:
        """Seconds until the earliest waiting session is due (None: nobody waits)."""
        due = [r.not_before - now for r in self._retries.values() if r.not_before > now]
        return min(due) if due else None

    def any(self) -> bool:
        """Whether any session has failures on record."""
        return bool(self._retries)

    def get(self, name: str) -> Retry | None:
        return self._retries.get(name)
