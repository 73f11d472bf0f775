"""The operator's own metrics: what one reconcile records, and what a recovered trial or a deleted
sweep leaves behind (nothing)."""

from __future__ import annotations

from prometheus_client import REGISTRY

from isoflop import api
from isoflop.cluster import metrics
from isoflop.sweep.engine import TrialState


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_failed_attempts_count_only_failures() -> None:
    assert TrialState("Pending", 0).failed_attempts == 0
    assert TrialState("Running", 1).failed_attempts == 0
    assert TrialState("Running", 3).failed_attempts == 2  # two pods failed, the third runs
    assert TrialState("Failed", 3).failed_attempts == 3
    assert TrialState("Succeeded", 3, 0.5).failed_attempts == 0


def test_record_sets_phases_exponents_and_failing_trials_then_forget_clears() -> None:
    ns, sweep = "metrics-test", "s1"
    laws = api.Laws(
        params=api.PowerLaw(
            coefficient=0.001,
            exponent=0.57,
            points=6,
            exponent_interval=api.Interval(low=0.5, high=0.6),
        )
    )
    metrics.record(ns, sweep, {"running": 2, "succeeded": 5}, laws, {"a": 2, "b": 0})
    assert sample("isoflop_operator_trials", namespace=ns, sweep=sweep, phase="running") == 2
    assert sample("isoflop_operator_trials", namespace=ns, sweep=sweep, phase="failed") == 0
    bounds = {
        b: sample("isoflop_operator_exponent", namespace=ns, sweep=sweep, law="params", bound=b)
        for b in ("estimate", "low", "high")
    }
    assert bounds == {"estimate": 0.57, "low": 0.5, "high": 0.6}
    failed = "isoflop_operator_trial_failed_attempts"
    assert sample(failed, namespace=ns, sweep=sweep, trial="a") == 2
    assert sample(failed, namespace=ns, sweep=sweep, trial="b") is None  # no failures: no series
    errors = "isoflop_operator_reconcile_errors_total"
    assert sample(errors, namespace=ns, sweep=sweep) == 0  # present from the start

    metrics.record(ns, sweep, {"succeeded": 7}, laws, {"a": 0})  # "a" recovered
    assert sample(failed, namespace=ns, sweep=sweep, trial="a") is None

    metrics.record(ns, sweep, {"running": 1}, laws, {"c": 1})
    metrics.forget(ns, sweep)
    for name, labels in [
        ("isoflop_operator_trials", {"phase": "succeeded"}),
        ("isoflop_operator_exponent", {"law": "params", "bound": "estimate"}),
        (failed, {"trial": "c"}),
        (errors, {}),
    ]:
        assert sample(name, namespace=ns, sweep=sweep, **labels) is None, name
