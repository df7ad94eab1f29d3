"""What a run did, session by session: the values the engine hands back to its callers.

The engine reports outcomes, never exit codes: `apply` turns a report into its exit code
(`apply_report.exit_code`), the daemon into a metric and a log line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Outcome(StrEnum):
    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"  # not attempted: the apply was aborted first


class Remark(StrEnum):
    """What an OK result needs said beside its detail, and counted apart in the summary."""

    ADOPTED = "adopted"  # a Start met a running task (--adopt-running) and took it over as it is
    UNCONFIRMED = "unconfirmed"  # recorded as delivered, though the answer was lost


@dataclass(frozen=True, slots=True)
class SessionResult:
    name: str
    kind: str
    outcome: Outcome
    detail: str = ""
    remark: Remark | None = None
    provider: str = ""
    requests: int = 0  # provider requests this session's calls took, retries included
    seconds: float = 0.0  # from the session's first intent to this result


@dataclass(slots=True)
class ApplyReport:
    results: list[SessionResult] = field(default_factory=list)
    aborted: str | None = None

    @property
    def succeeded(self) -> list[SessionResult]:
        return [r for r in self.results if r.outcome is Outcome.OK]

    @property
    def failed(self) -> list[SessionResult]:
        return [r for r in self.results if r.outcome is not Outcome.OK]
