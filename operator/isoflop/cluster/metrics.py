"""The operator's own Prometheus metrics (served by `kopf run` on ISOFLOP_METRICS_PORT).

The chart's alerts and Grafana dashboard read these names; `record` keeps them in step with one
reconcile of one sweep, and `forget` drops a deleted sweep's series.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

from prometheus_client import Counter, Gauge, Histogram

from isoflop import api

PHASES = ("pending", "queued", "starting", "running", "succeeded", "failed")  # queued: in Kueue
LAWS = ("params", "tokens", "loss")
METRIC_LAWS = ("fid", "bpd")  # the evaluator's metrics, when a sweep asks for them
BOUNDS = ("estimate", "low", "high")

TRIALS = Gauge(
    "isoflop_operator_trials", "Trials of a sweep by phase", ["namespace", "sweep", "phase"]
)
EXPONENT = Gauge(
    "isoflop_operator_exponent",
    "Fitted exponents of a sweep: the estimate and its bootstrap interval (bound low, high)",
    ["namespace", "sweep", "law", "bound"],
)
FAILED_ATTEMPTS = Gauge(
    "isoflop_operator_trial_failed_attempts",
    "Failed attempts of a trial that has not succeeded (absent for trials without failures)",
    ["namespace", "sweep", "trial"],
)
ERRORS = Counter(
    "isoflop_operator_reconcile_errors_total", "Reconcile errors", ["namespace", "sweep"]
)
LATENCY = Histogram("isoflop_operator_reconcile_seconds", "Reconcile latency in seconds")

_failing: dict[tuple[str, str], set[str]] = {}  # trials with a FAILED_ATTEMPTS series, per sweep


def record(
    namespace: str,
    sweep: str,
    counts: Mapping[str, int],
    laws: api.Laws | None,
    failed_attempts: Mapping[str, int],
) -> None:
    """Set a sweep's series after a reconcile: trials by phase, exponents with intervals, and the
    failed attempts of trials still not succeeded (series of trials that recovered are removed)."""
    for phase in PHASES:
        TRIALS.labels(namespace, sweep, phase).set(counts.get(phase, 0))
    ERRORS.labels(namespace, sweep)  # a series at 0 from the start: rate() sees the first error
    measured = dict(laws.metrics) if laws else {}  # fid, bpd: named as the trials report them
    for name in (*LAWS, *METRIC_LAWS):
        law = getattr(laws, name, None) if name in LAWS else measured.get(name)
        if law is None or laws is None:
            continue
        EXPONENT.labels(namespace, sweep, name, "estimate").set(law.exponent)
        if law.exponent_interval is not None:
            EXPONENT.labels(namespace, sweep, name, "low").set(law.exponent_interval.low)
            EXPONENT.labels(namespace, sweep, name, "high").set(law.exponent_interval.high)
    failing = {trial for trial, n in failed_attempts.items() if n > 0}
    for trial in _failing.get((namespace, sweep), set()) - failing:
        with contextlib.suppress(KeyError):
            FAILED_ATTEMPTS.remove(namespace, sweep, trial)
    for trial in failing:
        FAILED_ATTEMPTS.labels(namespace, sweep, trial).set(failed_attempts[trial])
    _failing[(namespace, sweep)] = failing


def forget(namespace: str, sweep: str) -> None:
    """Drop a deleted sweep's series."""
    for phase in PHASES:
        with contextlib.suppress(KeyError):
            TRIALS.remove(namespace, sweep, phase)
    for law in (*LAWS, *METRIC_LAWS):
        for bound in BOUNDS:
            with contextlib.suppress(KeyError):
                EXPONENT.remove(namespace, sweep, law, bound)
    for trial in _failing.pop((namespace, sweep), set()):
        with contextlib.suppress(KeyError):
            FAILED_ATTEMPTS.remove(namespace, sweep, trial)
    with contextlib.suppress(KeyError):
        ERRORS.remove(namespace, sweep)
