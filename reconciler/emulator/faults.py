"""The emulator's misbehaviour: the fault knobs, how one draw picks a fault, the QPS bucket.

`Faults` is what an operator sets (constructor, `/_emulator/faults`, `reconciler emulator
--faults`); `pick_fault` maps one uniform draw onto the rates laid end to end, and `TokenBucket`
caps the whole account's calls per second. `VolcengineApi` (volcengine.py) applies them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from enum import Enum
from typing import Any


@dataclass(frozen=True, slots=True)
class Faults:
    """Misbehaviour to inject. Rates are probabilities per API call and may sum to at most 1.

    500/502/503/429 injections answer without taking effect; lost_response and late_504 take
    effect first and then lose the answer (connection closed / HTTP 504 InternalServiceTimeout).
    `qps` caps the whole account (token bucket, one second of burst); `retry_after`, when set,
    is sent as a Retry-After header on every 429 (whether the real gateway does is unconfirmed).
    """

    qps: float | None = None
    latency: float = 0.0
    error_500_rate: float = 0.0
    error_502_rate: float = 0.0
    error_503_rate: float = 0.0
    error_429_rate: float = 0.0
    lost_response_rate: float = 0.0
    late_504_rate: float = 0.0
    retry_after: float | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        for knob in fields(self):
            value = getattr(self, knob.name)
            if knob.name != "seed" and value is not None and not math.isfinite(value):
                raise ValueError(f"{knob.name} must be a finite number")
        if self.qps is not None and self.qps <= 0:
            raise ValueError("qps must be positive (or null for no cap)")
        if self.latency < 0:
            raise ValueError("latency must not be negative")
        if self.retry_after is not None and self.retry_after < 0:
            raise ValueError("retry_after must not be negative")
        for name, rate in self._rates():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        # A small tolerance: callers split one rate in thirds, which may sum to 1 + 2e-16.
        if sum(rate for _, rate in self._rates()) > 1.0 + 1e-9:
            raise ValueError("the fault rates must sum to at most 1")

    def _rates(self) -> list[tuple[str, float]]:
        return [(f.name, getattr(self, f.name)) for f in fields(self) if f.name.endswith("_rate")]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Faults:
        """Build from a JSON object; unknown knobs and non-numbers are refused by name."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown fault knob(s): {', '.join(unknown)}")
        for name, value in data.items():
            if value is None and name in ("qps", "retry_after", "seed"):
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} must be a number")
            if name == "seed" and not isinstance(value, int):
                raise ValueError("seed must be an integer")
        return cls(**data)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Injected(Enum):
    NONE = "none"
    ERROR_500 = "InternalError"
    ERROR_502 = "InternalServiceError"
    ERROR_503 = "ServiceUnavailableTemp"
    ERROR_429 = "FlowLimitExceeded"
    LOST_RESPONSE = "lost_response"
    LATE_504 = "InternalServiceTimeout"


def pick_fault(faults: Faults, draw: float) -> Injected:
    """Map one uniform draw in [0, 1) onto the fault rates laid end to end."""
    edge = 0.0
    for fault, rate in (
        (Injected.ERROR_500, faults.error_500_rate),
        (Injected.ERROR_502, faults.error_502_rate),
        (Injected.ERROR_503, faults.error_503_rate),
        (Injected.ERROR_429, faults.error_429_rate),
        (Injected.LOST_RESPONSE, faults.lost_response_rate),
        (Injected.LATE_504, faults.late_504_rate),
    ):
        edge += rate
        if draw < edge:
            return fault
    return Injected.NONE


class TokenBucket:
    """`rate` tokens per second, holding at most one second's worth (never less than one)."""

    def __init__(self, rate: float, monotonic: Callable[[], float]) -> None:
        self._rate = rate
        self._capacity = max(rate, 1.0)
        self._tokens = self._capacity
        self._monotonic = monotonic
        self._updated = monotonic()

    def take(self) -> bool:
        now = self._monotonic()
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(self._capacity, self._tokens + elapsed * self._rate)
        self._updated = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False
