"""A cluster sweep in MLflow: the operator's side of `isoflop.tracking.experiment`.

A sweep is tracked when it names a server (`spec.tracking.mlflow.trackingUri`) or the
installation has a default one (the chart's `tracking.mlflow.trackingUri`, in
ISOFLOP_MLFLOW_TRACKING_URI). Its trials log from their pods, with the sweep's own credentials
(`spec.tracking.mlflow.credentialsSecret`, as environment variables) and network position; the
operator logs the budgets' parent runs, the fitted laws' run and the confirmations, with its
credentials only where they belong (`isoflop.tracking.auth`).

One `SweepTracking` per sweep uid lives in the operator's memory across reconciles; a restarted
operator makes a new one, which finds the same runs again by their key tags and goes on from the
status's refit count and "not logged" lines. Every call is buffered in a background thread, so a
tracker that is down never holds up a reconcile: what it never took is said in
`status.tracking.notLogged`.
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from isoflop import api
from isoflop.cluster import egress
from isoflop.tracking.auth import DEFAULT_URI_ENV, operator_environment
from isoflop.tracking.experiment import SweepTracking, experiment_name, tracking_uri
from isoflop_trainer.components.tracking import client_for

log = logging.getLogger(__name__)
_open: dict[str, SweepTracking] = {}  # sweep uid: its tracking, while the sweep runs
_lock = threading.Lock()


def operator_client(uri: str) -> Any:
    """An MlflowClient for the operator's own runs: the server's addresses checked first (never a
    link-local or metadata address, however the name resolves), redirects off, credentials by
    `isoflop.tracking.auth`. Raises (the tracker retries, then drops) when refused."""
    operator_environment()
    parts = urlsplit(uri)
    if parts.hostname is None:
        raise egress.Refused(f"{uri!r} names no host")
    egress.checked_addresses(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    return client_for(uri)


def tracking_for(
    uid: str,
    sweep: str,
    namespace: str,
    spec: api.ScalingSweepSpec,
    status: Mapping[str, Any],
    env: Mapping[str, str],
    client: Any = operator_client,
) -> SweepTracking | None:
    """The sweep's tracking, made on its first reconcile (or after a restart: its runs found
    again by key) with its budgets' runs begun; None when the sweep is not tracked."""
    uri = tracking_uri(spec, env, DEFAULT_URI_ENV)  # its own, else the installation's
    if uri is None:  # untracked, or no longer: the runs it had go on where they are
        forget(uid)
        return None
    experiment = experiment_name(spec, sweep, namespace)
    with _lock:
        tracking = _open.get(uid)
        if tracking is not None and (tracking.uri, tracking.experiment) == (uri, experiment):
            return tracking
        replaced = tracking  # the spec moved it: its runs go on where they are
        stored = status.get("tracking") or {}
        tracking = SweepTracking(
            uri,
            experiment,
            sweep,
            uid,
            namespace,
            client=client,
            refits=int(stored.get("refits") or 0),
            not_logged=list(stored.get("notLogged") or []),
        )
        tracking.open([*spec.budgets, *spec.confirm])
        _open[uid] = tracking
    if replaced is not None:  # outside the lock: its bounded wait holds up no other sweep
        replaced.close(None)
    return tracking


def trial_fields(
    tracking: SweepTracking | None,
    trial: str,
    budget: float,
    confirmations: Iterable[api.Confirmation],
) -> dict[str, Any]:
    """A trial's `tracking_*` TrainConfig fields ({} untracked); a confirmation's params carry
    the loss its laws predicted."""
    if tracking is None:
        return {}
    predicted = next((c.predicted_loss for c in confirmations if c.trial == trial), None)
    extra = {"predicted_loss": predicted} if predicted is not None else None
    return tracking.trial_fields(trial, budget, extra)


def dropped(tracking: SweepTracking, trial: str, message: Mapping[str, Any] | None) -> None:
    """What a trial's tracker said it could not log (`tracking_dropped` of its termination
    message), as a line of the status."""
    count = (message or {}).get("tracking_dropped")
    if isinstance(count, int) and count > 0:
        tracking.note(f"trial {trial}: {count} values not logged (the tracker was down or refused)")


def finish(uid: str, phase: str, confirmations: Iterable[api.Confirmation], fit: Any) -> None:
    """A sweep that ended: its confirmations and final fit (fit.json) logged, its runs ended
    FINISHED or FAILED (a bounded wait), its tracking forgotten."""
    with _lock:
        tracking = _open.pop(uid, None)
    if tracking is None:
        return
    for c in confirmations:
        tracking.log_confirmation(c)
    with tempfile.TemporaryDirectory(prefix="isoflop-fit-") as tmp:
        if fit is not None:
            path = Path(tmp) / "fit.json"
            path.write_text(json.dumps(fit, indent=2, sort_keys=True))
            tracking.artifacts([str(path)])
        tracking.close("FINISHED" if phase == "Succeeded" else "FAILED")


def forget(uid: str) -> None:
    """A deleted sweep: its runs left as they are (RUNNING), its trackers stopped."""
    with _lock:
        tracking = _open.pop(uid, None)
    if tracking is not None:
        tracking.close(None)


def close_all() -> None:
    """The operator's shutdown: each sweep's pending values sent (bounded), its runs go on."""
    with _lock:
        open_now = list(_open.values())
        _open.clear()
    for tracking in open_now:
        tracking.close(None)
