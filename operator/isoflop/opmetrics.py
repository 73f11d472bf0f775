"""The operator's own Prometheus metrics (served by `kopf run` on ISOFLOP_METRICS_PORT)."""

from __future__ import annotations

import contextlib

from prometheus_client import Counter, Gauge, Histogram

TRIALS = Gauge(
    "isoflop_operator_trials", "Trials of a sweep by phase", ["namespace", "sweep", "phase"]
)
EXPONENT = Gauge(
    "isoflop_operator_exponent", "Fitted exponents of a sweep", ["namespace", "sweep", "law"]
)
ERRORS = Counter(
    "isoflop_operator_reconcile_errors_total", "Reconcile errors", ["namespace", "sweep"]
)
LATENCY = Histogram("isoflop_operator_reconcile_seconds", "Reconcile latency in seconds")


def forget(namespace: str, sweep: str) -> None:
    """Drop a deleted sweep's series."""
    for phase in ("pending", "running", "succeeded", "failed"):
        with contextlib.suppress(KeyError):
            TRIALS.remove(namespace, sweep, phase)
    for law in ("params", "tokens", "loss"):
        with contextlib.suppress(KeyError):
            EXPONENT.remove(namespace, sweep, law)
