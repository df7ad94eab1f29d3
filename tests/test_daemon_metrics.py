"""/metrics: DESIGN.md's names and labels, read back with prometheus-client's own parser."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from reconciler.daemon.metrics import DaemonMetrics, HealSource, ReconcileResult

# DESIGN.md: the names dashboards rely on, as (sample name, label names).
PROMISED = {
    ("reconciler_reconcile_total", ("result",)),
    ("reconciler_reconcile_duration_seconds_count", ()),
    ("reconciler_reconcile_duration_seconds_sum", ()),
    ("reconciler_reconcile_duration_seconds_bucket", ("le",)),
    ("reconciler_provider_requests_total", ("action", "outcome", "provider")),
    ("reconciler_sessions", ("provider", "status")),
    ("reconciler_desired_valid", ()),
    ("reconciler_leader", ()),
    ("reconciler_last_success_timestamp_seconds", ()),
    ("reconciler_drift_heals_total", ("provider", "source")),
}


def _samples(metrics: DaemonMetrics) -> list[Sample]:
    text = metrics.exposition().decode("utf-8")
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def _value(samples: list[Sample], name: str, **labels: str) -> float:
    found = [s.value for s in samples if s.name == name and s.labels == labels]
    assert len(found) == 1, (name, labels, found)
    return float(found[0])


def test_every_promised_series_and_nothing_else() -> None:
    metrics = DaemonMetrics()
    metrics.reconcile_finished(ReconcileResult.CONVERGED, 0.2, now=1_700_000_000.0)
    metrics.provider_request("volcengine", "start", "ok")
    metrics.set_sessions({("volcengine", "running"): 3})
    metrics.drift_healed("aliyun", HealSource.CALLBACK)
    samples = _samples(metrics)
    shapes = {(s.name, tuple(sorted(s.labels))) for s in samples}
    assert shapes == PROMISED


def test_values_after_a_few_passes() -> None:
    metrics = DaemonMetrics()
    samples = _samples(metrics)
    # Before anything happened: every result at 0, not leading, not known valid.
    for result in ReconcileResult:
        assert _value(samples, "reconciler_reconcile_total", result=result.value) == 0
    assert _value(samples, "reconciler_leader") == 0
    assert _value(samples, "reconciler_desired_valid") == 0

    metrics.set_leader(True)
    metrics.set_desired_valid(True)
    metrics.reconcile_finished(ReconcileResult.CONVERGED, 0.02, now=1000.0)
    metrics.reconcile_finished(ReconcileResult.PARTIAL, 3.0, now=2000.0)
    metrics.reconcile_finished(ReconcileResult.INVALID, 0.001, now=3000.0)
    for _ in range(2):
        metrics.provider_request("aliyun", "describe", "ok")
    metrics.provider_request("aliyun", "start", "throttled")
    metrics.drift_healed("aliyun", HealSource.OBSERVE)
    metrics.drift_healed("aliyun", HealSource.OBSERVE)
    metrics.set_sessions({("aliyun", "running"): 5, ("aliyun", "failed"): 1})
    metrics.set_sessions({("aliyun", "running"): 6})  # the failed one recovered
    samples = _samples(metrics)

    assert _value(samples, "reconciler_leader") == 1
    assert _value(samples, "reconciler_desired_valid") == 1
    assert _value(samples, "reconciler_reconcile_total", result="converged") == 1
    assert _value(samples, "reconciler_reconcile_total", result="partial") == 1
    assert _value(samples, "reconciler_reconcile_total", result="invalid") == 1
    assert _value(samples, "reconciler_reconcile_duration_seconds_count") == 3
    assert _value(samples, "reconciler_reconcile_duration_seconds_bucket", le="0.05") == 2
    # Only a converged pass is a success.
    assert _value(samples, "reconciler_last_success_timestamp_seconds") == 1000.0
    requests = "reconciler_provider_requests_total"
    assert _value(samples, requests, provider="aliyun", action="describe", outcome="ok") == 2
    assert _value(samples, requests, provider="aliyun", action="start", outcome="throttled") == 1
    assert _value(samples, "reconciler_drift_heals_total", provider="aliyun", source="observe") == 2
    sessions = [s for s in samples if s.name == "reconciler_sessions"]
    assert [(s.labels, s.value) for s in sessions] == [
        ({"provider": "aliyun", "status": "running"}, 6.0)
    ]


def test_two_daemons_in_one_process_do_not_share_counters() -> None:
    first, second = DaemonMetrics(), DaemonMetrics()
    first.reconcile_finished(ReconcileResult.FAILED, 1.0, now=1.0)
    assert _value(_samples(second), "reconciler_reconcile_total", result="failed") == 0
    assert _value(_samples(first), "reconciler_reconcile_total", result="failed") == 1


def test_a_result_or_heal_source_outside_the_closed_sets_is_refused() -> None:
    metrics = DaemonMetrics()
    with pytest.raises(ValueError):
        metrics.reconcile_finished("weird", 1.0, now=1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        metrics.drift_healed("aliyun", "guess")  # type: ignore[arg-type]
