"""The daemon's Prometheus metrics: exactly the names and labels DESIGN.md promises dashboards.

    reconciler_reconcile_total{result}                       counter
    reconciler_reconcile_duration_seconds                    histogram
    reconciler_provider_requests_total{provider,action,outcome}  counter
    reconciler_sessions{provider,status}                     gauge
    reconciler_desired_valid                                 gauge, 0/1
    reconciler_leader                                        gauge, 0/1
    reconciler_last_success_timestamp_seconds                gauge, Unix time
    reconciler_drift_heals_total{provider,source}            counter, source: observe|callback

A registry of its own (not prometheus-client's global one), so two daemons in one test process
do not share counters, and nothing else a library registers shows up on /metrics. Label values
are checked against closed sets where the set is ours (results, heal sources): an unbounded
label is how a metrics backend falls over.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

# The `_created` series prometheus-client adds to every counter are not among the names
# dashboards rely on; the switch is process-wide in the library.
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in the library

CONTENT_TYPE = CONTENT_TYPE_LATEST
# From a no-change pass (milliseconds) to a large apply against a rate-limited cloud (minutes).
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class ReconcileResult(StrEnum):
    CONVERGED = "converged"  # every action succeeded, or there was nothing to do
    PARTIAL = "partial"  # some sessions failed, the others were done
    FAILED = "failed"  # the pass stopped (state unreachable, credentials refused...)
    INVALID = "invalid"  # the desired set is invalid: nothing was done
    REFUSED = "refused"  # a guard tripped (empty set, stop budget, protected session)


class HealSource(StrEnum):
    OBSERVE = "observe"
    CALLBACK = "callback"


class DaemonMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._reconciles = Counter(
            "reconciler_reconcile_total", "Reconcile passes by result.", ["result"], registry=r
        )
        self._duration = Histogram(
            "reconciler_reconcile_duration_seconds",
            "Wall-clock time of a reconcile pass.",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self._requests = Counter(
            "reconciler_provider_requests_total",
            "Cloud API requests by provider, action and outcome.",
            ["provider", "action", "outcome"],
            registry=r,
        )
        self._sessions = Gauge(
            "reconciler_sessions",
            "Sessions by provider and status.",
            ["provider", "status"],
            registry=r,
        )
        self._valid = Gauge(
            "reconciler_desired_valid", "1 when the desired set last read is valid.", registry=r
        )
        self._leader = Gauge("reconciler_leader", "1 while this replica leads.", registry=r)
        self._last_success = Gauge(
            "reconciler_last_success_timestamp_seconds",
            "Unix time of the end of the last converged pass.",
            registry=r,
        )
        self._heals = Counter(
            "reconciler_drift_heals_total",
            "Sessions restarted because they had ended by themselves, by how that was learnt.",
            ["provider", "source"],
            registry=r,
        )
        # Every result at 0 from the start, so that rate() and alerts see the series at once.
        for result in ReconcileResult:
            self._reconciles.labels(result=result.value)
        self._session_keys: set[tuple[str, str]] = set()

    def reconcile_finished(self, result: ReconcileResult, seconds: float, now: float) -> None:
        """One pass ended after `seconds`; `now` is the Unix time it ended."""
        self._reconciles.labels(result=ReconcileResult(result).value).inc()
        self._duration.observe(seconds)
        if result is ReconcileResult.CONVERGED:
            self._last_success.set(now)

    def provider_request(self, provider: str, action: str, outcome: str) -> None:
        self._requests.labels(provider=provider, action=action, outcome=outcome).inc()

    def drift_healed(self, provider: str, source: HealSource) -> None:
        self._heals.labels(provider=provider, source=HealSource(source).value).inc()

    def set_sessions(self, counts: Mapping[tuple[str, str], int]) -> None:
        """Replace the session counts, keyed by (provider, status): a status no session has
        any more goes away instead of staying at its last value."""
        for key in self._session_keys - counts.keys():
            self._sessions.remove(*key)
        for (provider, status), count in counts.items():
            self._sessions.labels(provider=provider, status=status).set(count)
        self._session_keys = set(counts)

    def set_desired_valid(self, valid: bool) -> None:
        self._valid.set(1 if valid else 0)

    def set_leader(self, leading: bool) -> None:
        self._leader.set(1 if leading else 0)

    def exposition(self) -> bytes:
        """The text format /metrics serves (Content-Type: CONTENT_TYPE)."""
        return generate_latest(self.registry)
