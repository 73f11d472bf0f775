"""The data check on a cluster: a Job with the sweep's own credentials reads the shard indexes
before any trial starts; its verdict (samples, epochs, or why not) is the status's `data`."""

from __future__ import annotations

import os
from typing import Any

import kubernetes
from kubernetes.client.rest import ApiException

from isoflop import api
from isoflop.cluster.clients import Clients
from isoflop.cluster.manifests import (
    DATA_CHECK,
    DEFAULT_QUEUE_ENV,
    ROLE_LABEL,
    data_check_job,
)
from isoflop.cluster.results import termination_message
from isoflop.sweep.datacheck import epochs
from isoflop.sweep.plan import Plan
from isoflop_trainer.data.store import is_shards


def data_status(
    sweep: api.ScalingSweep,
    uid: str,
    namespace: str,
    status: dict[str, Any],
    jobs: list[Any],
    p: Plan,
    clients: Clients,
) -> api.DataStatus | None:
    """Whether the sweep's shards exist and fit it, as a Job with the sweep's own credentials
    found them; None for procedural data. `data` is immutable, so one check holds for good."""
    spec = sweep.spec
    if not is_shards(spec.data.source):
        return None
    before = status.get("data")
    if isinstance(before, dict) and before.get("ready") is not None:
        return api.DataStatus.model_validate(before)
    check = next((j for j in jobs if (j.metadata.labels or {}).get(ROLE_LABEL) == DATA_CHECK), None)
    checking = api.DataStatus(message=f"checking {spec.data.source} before any trial starts")
    if check is None:
        try:
            job = data_check_job(sweep, uid, namespace, os.environ.get(DEFAULT_QUEUE_ENV))
            clients.batch.create_namespaced_job(namespace, job)
        except ApiException as err:
            if err.status != 409:
                raise
        return checking
    st = check.status or kubernetes.client.V1JobStatus()
    failed = any(c.type == "Failed" and c.status == "True" for c in (st.conditions or []))
    if not (st.succeeded or failed):
        if check.spec is not None and check.spec.suspend:
            return checking.model_copy(
                update={"message": checking.message + " (its Job is queued: not admitted yet)"}
            )
        return checking
    said = termination_message(clients, namespace, check.metadata.name) or {}
    if failed:
        error = said.get("error") or "the data check Job failed without a message"
        return api.DataStatus(ready=False, message=str(error)[:1000])
    samples, val = said.get("samples"), said.get("validation_samples")
    if not isinstance(samples, int) or samples < 1:
        return checking  # the pod's message is not readable yet
    each = epochs(p, samples)
    span = [min(each.values()), max(each.values())] if each else None
    message = f"{samples} training samples"
    if span is not None:
        message += f"; a planned trial makes {span[0]:.3g} to {span[1]:.3g} epochs over them"
    return api.DataStatus(
        ready=True,
        samples=samples,
        validation_samples=val if isinstance(val, int) else None,
        epochs=span,
        message=message,
    )
