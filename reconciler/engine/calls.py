"""Every provider request of a run, as an event: what the daemon counts and logs.

A call (Start this session) may take several requests (its retries); each request is one
CallEvent with its attempt number, how long it took and how it ended — "ok", or the error's
kind. The session a request is for is known from the run's own context: each session's calls
run in one task, which `session_scope` marks, so the events and the session's result can say
how many requests it took and how long, without every call site passing the name along.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import TypeVar

from reconciler.engine.results import SessionResult
from reconciler.errors import ProviderError

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class CallEvent:
    provider: str
    action: str  # start | stop | update | announce | observe | list
    session: str | None
    attempt: int  # 1 for the first request of a call, 2 for its first retry...
    outcome: str  # "ok", or the error's kind (retryable, conflict, not_found, terminal, error)
    seconds: float
    error: str = ""  # the error's message (never a secret: providers mask what they echo)


OnCall = Callable[[CallEvent], None]


def ignore_calls(event: CallEvent) -> None:
    """The default: nobody counts."""


@dataclass(slots=True)
class _SessionTally:
    name: str
    provider: str
    started: float
    requests: int = 0


_CURRENT: ContextVar[_SessionTally | None] = ContextVar("reconciler_session_calls", default=None)


@contextmanager
def session_scope(name: str, provider: str) -> Iterator[None]:
    """Mark the calls made inside (in this task) as this session's."""
    token = _CURRENT.set(_SessionTally(name, provider, time.monotonic()))
    try:
        yield
    finally:
        _CURRENT.reset(token)


def current_session() -> str | None:
    tally = _CURRENT.get()
    return None if tally is None else tally.name


def with_tally(result: SessionResult) -> SessionResult:
    """The result with its session's provider, request count and time so far."""
    tally = _CURRENT.get()
    if tally is None or tally.name != result.name:
        return result
    return replace(
        result,
        provider=result.provider or tally.provider,
        requests=tally.requests,
        seconds=time.monotonic() - tally.started,
    )


def reported(
    provider: str,
    action: str,
    call: Callable[[], Awaitable[T]],
    on_call: OnCall,
    session: str | None = None,
) -> Callable[[], Awaitable[T]]:
    """`call`, one CallEvent per request it makes (the retry loop calls it once per attempt)."""
    attempt = 0

    async def each() -> T:
        nonlocal attempt
        attempt += 1
        tally = _CURRENT.get()
        if tally is not None:
            tally.requests += 1
        name = session if session is not None else current_session()
        began = time.monotonic()
        try:
            value = await call()
        except ProviderError as error:
            seconds = time.monotonic() - began
            kind = error.kind.value
            on_call(CallEvent(provider, action, name, attempt, kind, seconds, str(error)))
            raise
        except Exception as error:
            seconds = time.monotonic() - began
            on_call(CallEvent(provider, action, name, attempt, "error", seconds, str(error)))
            raise
        on_call(CallEvent(provider, action, name, attempt, "ok", time.monotonic() - began))
        return value

    return each
