"""A finished trial's result: its final metrics through Prometheus's HTTP API, else the trainer's
termination message; and what the pods of a retried Job say (which failures its policy ignores)."""

from __future__ import annotations

import http.client
import json
import logging
import math
import os
import urllib.parse
from collections.abc import Callable
from typing import Any

from isoflop import api
from isoflop.cluster import egress
from isoflop.cluster.clients import Clients, pods_by_job
from isoflop.cluster.manifests import (
    PREEMPTED_EXIT_CODE,
)

log = logging.getLogger(__name__)
RESULT_METRICS = ("fid", "bpd", "loss_se")  # beside the loss: what the fit turns into laws


def read_result(
    pods: Callable[[], list[Any]],
    spec: api.ScalingSweepSpec,
    sweep: str,
    namespace: str,
    trial: str,
) -> tuple[float | None, api.ResultSource, str, dict[str, float]] | None:
    """(loss, source, note, metrics) of a finished trial; loss None means a failed trial (NaN);
    None means not readable yet (try again on the next reconcile). Metrics are the FID,
    bits/dim and the loss's standard error where the trial measured them. `pods` gives the
    trial Job's pods, asked only when Prometheus has no result (the reconcile lists the sweep's
    pods once, not once per trial)."""
    loss: float | None = None
    metrics: dict[str, float] = {}
    source: api.ResultSource = "prometheus"
    prometheus = spec.metrics.prometheus_url or os.environ.get("ISOFLOP_PROMETHEUS_URL")
    if prometheus:
        loss = query_prometheus(prometheus, spec.metrics, namespace, sweep, trial)
        if loss is not None:
            asked = {
                "fid": bool(spec.evaluation.fid.samples),
                "bpd": bool(spec.evaluation.likelihood.samples),
                "loss_se": True,
            }
            for name in (m for m in RESULT_METRICS if asked[m]):
                value = query_prometheus(
                    prometheus, spec.metrics, namespace, sweep, trial, f"eval_{name}"
                )
                if value is not None and math.isfinite(value):
                    metrics[name] = value
    if loss is None:
        source = "termination-message"
        message = message_of(pods())
        if message is None:
            return None
        value = message.get("eval_loss")
        if message.get("status") != "succeeded":
            return (
                None,
                source,
                f"the trainer reported {message.get('status')}: {message.get('error')}",
                {},
            )
        loss = float(value) if isinstance(value, int | float) else math.nan
        metrics = {
            name: float(v)
            for name in RESULT_METRICS
            if isinstance(v := message.get(f"eval_{name}"), int | float) and math.isfinite(v)
        }
    if not math.isfinite(loss):
        return None, source, f"the final validation loss is {loss}, not a number to fit", {}
    return loss, source, "", metrics


def result_query(
    namespace: str, sweep: str, trial: str, lookback: str, metric: str = "eval_loss"
) -> str:
    """PromQL for a trial's final value of a metric. `namespace` is the label every Kubernetes
    scrape (the chart's PodMonitor included) attaches: sweeps of the same name in two namespaces
    differ."""
    selector = f'namespace="{namespace}",sweep="{sweep}",trial="{trial}"'
    return f"last_over_time(isoflop_{metric}{{{selector}}}[{lookback}])"


def query_prometheus(
    base_url: str,
    metrics: api.MetricsSpec,
    namespace: str,
    sweep: str,
    trial: str,
    metric: str = "eval_loss",
) -> float | None:
    """The trial's last isoflop_<metric> through the HTTP API; None if absent or unreachable."""
    query = result_query(namespace, sweep, trial, metrics.lookback, metric)
    url = f"{base_url.rstrip('/')}/api/v1/query?{urllib.parse.urlencode({'query': query})}"
    try:  # never to a metadata address, whatever the spelling; no redirect followed
        data = egress.get_json(url, timeout=metrics.query_timeout_seconds)
    except egress.Refused as err:
        log.warning("sweep %s/%s: Prometheus not asked: %s", namespace, sweep, err)
        return None
    except (OSError, ValueError, http.client.HTTPException):
        return None  # down or slow: the termination message, or the next reconcile, has it
    if not isinstance(data, dict):
        return None
    results = data.get("data", {}).get("result", []) if data.get("status") == "success" else []
    if not results:
        return None
    return float(results[0]["value"][1])


def ignored_failures(pods: list[Any]) -> int:
    """Failed pods the Job's podFailurePolicy ignores, which its status.failed counts all the
    same: a trainer that checkpointed on SIGTERM and exited PREEMPTED_EXIT_CODE, or a pod with a
    DisruptionTarget condition (preempted, evicted, its node drained)."""
    count = 0
    for pod in pods:
        status = pod.status
        if status is None:
            continue
        disrupted = any(
            c.type == "DisruptionTarget" and c.status == "True" for c in status.conditions or []
        )
        preempted = any(
            cs.name == "trainer"
            and cs.state is not None
            and cs.state.terminated is not None
            and cs.state.terminated.exit_code == PREEMPTED_EXIT_CODE
            for cs in status.container_statuses or []
        )
        count += status.phase == "Failed" and (disrupted or preempted)
    return count


def termination_message(clients: Clients, namespace: str, job: str) -> dict[str, Any] | None:
    """The trainer's result from the termination message of the Job's pod that succeeded, or
    else of its last pod to end. A Job retries pods (a preempted one, a failed one): their older
    messages must not be taken for the trial's result."""
    return message_of(pods_by_job(clients, namespace, f"job-name={job}").get(job, []))


def message_of(pods: list[Any]) -> dict[str, Any] | None:
    """termination_message, from the Job's pods already listed."""
    found: list[tuple[bool, str, dict[str, Any]]] = []  # (succeeded, finished at, message)
    for pod in pods:
        if pod.status is None:
            continue
        succeeded = getattr(pod.status, "phase", None) == "Succeeded"
        for cs in pod.status.container_statuses or []:
            term = cs.state.terminated if cs.state else None
            if term is None or not term.message:
                continue
            try:
                parsed = json.loads(term.message)
            except json.JSONDecodeError:
                continue
            if isinstance(parsed, dict):
                finished = getattr(term, "finished_at", None)
                found.append((succeeded, str(finished or ""), parsed))
    if not found:
        return None
    return max(found, key=lambda f: (f[0], f[1]))[2]
