"""One exception tree for the whole program.

    ReconcilerError                 anything the CLI turns into a clean message and an exit code
    ├── InputError                  a desired-state file is unusable (exit 1, nothing done)
    │   └── ValidationFailed        carries every Problem found, not just the first
    ├── SecretError                 a ${env:..} / ${file:..} reference cannot be resolved
    ├── SettingsError               configuration (credentials, endpoint, state URL) is unusable
    ├── StateError                  the state store is unreadable or of an unknown version
    │   ├── StateMissing            a read-only open found no state at that location
    │   ├── LockHeld                another writer holds the lock; names the holder
    │   └── LockLost                the writer lock was taken away from us (state unlock)
    ├── PlanRefused                 a guard tripped or a saved plan is stale (exit 1)
    ├── UsageError                  arguments that cannot go together (exit 2, like argparse)
    └── ProviderError               a cloud call failed; its type says how the engine treats it
        ├── Transient               5xx, transport errors, timeouts: retried; `sent` says
        │   │                       whether it may have reached the cloud
        │   └── Throttled           refused at the gateway before taking effect: safe to retry
        │                           anything; `retry_after` is the floor of the next wait
        ├── AuthRefused             the credentials are refused: the whole apply stops
        ├── Conflict                "already running": the Start we wanted has taken effect
        ├── NotFound                the task/instance is not running (stopped counts as stopped)
        └── Terminal                the request itself is refused: final for this session only

Core modules raise only InputError/ValidationFailed/PlanRefused; the shell raises the rest.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import StrEnum


class ReconcilerError(Exception):
    """Base of every error the CLI reports without a traceback."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with the input, located as precisely as the format allows."""

    file: str
    pointer: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        pointer = self.pointer if self.pointer else "/"
        return f"{where}: {pointer}: {self.message}"


def os_reason(error: OSError) -> str:
    """An OSError as the end of a one-line message: "permission denied", without the path and
    errno that str(error) repeats."""
    reason = os.strerror(error.errno) if error.errno else str(error)
    return reason[:1].lower() + reason[1:]


class InputError(ReconcilerError):
    """A desired-state file cannot be used."""


class ValidationFailed(InputError):
    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems, key=_problem_order)
        super().__init__("\n".join(str(p) for p in self.problems))


def _problem_order(problem: Problem) -> tuple[str, int, str, str]:
    return (problem.file, problem.line or 0, problem.pointer, problem.message)


class SecretError(ReconcilerError):
    """A secret reference could not be resolved; raised before any call is made."""


class SettingsError(ReconcilerError):
    """The configuration is unusable (missing credentials, bad URL...)."""


class StateError(ReconcilerError):
    """The state store cannot be read or written."""


class StateMissing(StateError):
    """Opening without `create` found no state: read-only commands treat it as empty."""

    def __init__(self, location: str) -> None:
        self.location = location
        super().__init__(f"no state at {location} yet")


@dataclass(frozen=True, slots=True)
class LockHolder:
    pid: int
    host: str
    command: str
    since: str

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host} ({self.command}), since {self.since}"


class LockHeld(StateError):
    def __init__(self, holder: LockHolder | None) -> None:
        self.holder = holder
        who = holder.describe() if holder else "an unknown holder"
        super().__init__(f"the state is locked by {who}")


class LockLost(StateError):
    """The writer lock this process held is gone: another process may be writing now, so
    nothing more may be called or journaled."""


class PlanRefused(ReconcilerError):
    """A guard tripped or a saved plan is stale: nothing is done."""


class UsageError(ReconcilerError):
    """The command line is wrong in a way argparse cannot see (e.g. a saved plan among paths)."""


class ErrorKind(StrEnum):
    RETRYABLE = "retryable"  # 429, throttling, 5xx, transport errors, timeouts
    CONFLICT = "conflict"  # "already started": the Start we wanted has taken effect
    NOT_FOUND = "not_found"  # the task is missing or already stopped
    TERMINAL = "terminal"  # auth, validation: retrying cannot help


class ProviderError(ReconcilerError):
    """A failed cloud call. Providers raise one of the subclasses below, classified once by
    their own client; the engine matches on the type and never on a vendor's error code."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        code: str = "",
        status: int | None = None,
        retry_after: float | None = None,
        sent: bool = True,
    ) -> None:
        self.kind = kind
        self.code = code
        self.status = status
        self.retry_after = retry_after
        # False only when the request certainly never left this machine (connection refused,
        # DNS failure, connect or pool timeout); True means "sent, or unknown".
        self.sent = sent
        detail = f"{code}: {message}" if code else message
        if status is not None:
            detail = f"HTTP {status} {detail}"
        super().__init__(detail)


class _KindedError(ProviderError):
    """A ProviderError whose kind is fixed by its type."""

    KIND: ErrorKind = ErrorKind.TERMINAL

    def __init__(
        self,
        message: str,
        *,
        code: str = "",
        status: int | None = None,
        retry_after: float | None = None,
        sent: bool = True,
    ) -> None:
        super().__init__(
            self.KIND, message, code=code, status=status, retry_after=retry_after, sent=sent
        )


class Transient(_KindedError):
    KIND = ErrorKind.RETRYABLE


class Throttled(Transient):
    """Refused by the gateway's rate limit: the call took no effect."""


class AuthRefused(_KindedError):
    KIND = ErrorKind.TERMINAL


class Conflict(_KindedError):
    KIND = ErrorKind.CONFLICT


class NotFound(_KindedError):
    KIND = ErrorKind.NOT_FOUND


class Terminal(_KindedError):
    """The request itself is refused; `client_code` is the vendor's client-side code for it
    where the vendor documents one (Alibaba Cloud's -10204 for AgentNotFound)."""

    KIND = ErrorKind.TERMINAL

    def __init__(
        self,
        message: str,
        *,
        code: str = "",
        status: int | None = None,
        retry_after: float | None = None,
        sent: bool = True,
        client_code: int | None = None,
    ) -> None:
        super().__init__(message, code=code, status=status, retry_after=retry_after, sent=sent)
        self.client_code = client_code
