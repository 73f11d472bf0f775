"""The model check on a cluster: a Job in the sweep's own trainer image, as the sweep's
ServiceAccount, builds each rung of a class family (diffusers or custom) on the meta device and
counts its parameters and FLOPs; its verdict is the status's `modelCheck`, which the sweep is
planned from. The operator never imports torch, diffusers or a user's family.

The check is asked for the rungs' requests (`check_request`); its verdict is kept with their
digest, so it runs once per sweep (the family and its arguments are immutable) and again only for
another ladder. A rung the class refuses fails the sweep once, with the constructor's sentence.
"""

from __future__ import annotations

import os
from typing import Any

import kopf
import kubernetes
from kubernetes.client.rest import ApiException

from isoflop import api
from isoflop.cluster.clients import Clients, delete_job, list_raw
from isoflop.cluster.manifests import (
    DEFAULT_QUEUE_ENV,
    MODEL_CHECK,
    REQUEST_LABEL,
    ROLE_LABEL,
    SWEEP_LABEL,
    job_name,
    model_check_job,
)
from isoflop.cluster.results import termination_message
from isoflop.sweep.check import runnable_plan
from isoflop.sweep.families import by_digest, check_request, check_status, measured, rung_field
from isoflop.sweep.plan import Plan
from isoflop_trainer.families import Measure, from_compact


def model_check(
    sweep: api.ScalingSweep, uid: str, namespace: str, status: dict[str, Any], clients: Clients
) -> api.ModelCheckStatus:
    """What the model check found of the sweep's rungs: ready with every rung's measure, refused
    (ready false, the sentence naming the rung), or still checking (its Job created if need be)."""
    spec = sweep.spec
    requests, request = check_request(spec)
    before = status.get("modelCheck")
    if isinstance(before, dict) and before.get("request") == request:
        kept = api.ModelCheckStatus.model_validate(before)
        if kept.ready is not None:
            return kept
    checking = api.ModelCheckStatus(
        request=request,
        message=f"measuring {len(requests)} rungs of {spec.model.transformer} before any trial",
    )
    selector = f"{SWEEP_LABEL}={sweep.name},{ROLE_LABEL}={MODEL_CHECK}"
    found = [
        j
        for j in list_raw(clients.batch.list_namespaced_job, namespace, selector)
        if (j.metadata.labels or {}).get(ROLE_LABEL) == MODEL_CHECK
        and (j.metadata.labels or {}).get(SWEEP_LABEL) == sweep.name
    ]
    job = found[0] if found else None
    if job is not None and (job.metadata.labels or {}).get(REQUEST_LABEL) != request:
        delete_job(clients, job.metadata.name, namespace)  # checked other rungs: check these
        return checking
    if job is None:
        try:
            manifest = model_check_job(
                sweep, uid, namespace, requests, request, os.environ.get(DEFAULT_QUEUE_ENV)
            )
            clients.batch.create_namespaced_job(namespace, manifest)
        except ApiException as err:
            if err.status != 409:  # 409: the older Job is still being deleted, or a restart
                raise
        return checking
    st = job.status or kubernetes.client.V1JobStatus()
    ended = [c for c in st.conditions or [] if c.type == "Failed" and c.status == "True"]
    failed = bool(ended)
    if not (st.succeeded or failed):
        if job.spec is not None and job.spec.suspend:
            return checking.model_copy(
                update={"message": checking.message + " (its Job is queued: not admitted yet)"}
            )
        return checking
    said = termination_message(clients, namespace, job_name(sweep.name, MODEL_CHECK)) or {}
    if failed:
        rung, error = said.get("rung"), said.get("error")
        if isinstance(rung, str) and rung in requests:
            message = f"{rung_field(spec, rung)} ('{rung}'): {error}"
        else:  # it never said (its image did not start, it ran out of memory or time)
            why = error or next((c.message or c.reason for c in ended if c.message or c.reason), "")
            message = f"spec.model: the model check Job failed: {why or 'it left no message'}"
        return api.ModelCheckStatus(ready=False, request=request, message=message[:1500])
    measures = from_compact(said, list(requests))
    if measures is None:
        return checking  # the pod's message is not readable yet
    torch = said.get("torch") if isinstance(said.get("torch"), str) else None
    ready = check_status(measured(spec, by_digest(spec, measures)), torch)
    assert ready is not None  # a class family's
    return ready


def checked_spec(spec: api.ScalingSweepSpec, check: api.ModelCheckStatus) -> api.ScalingSweepSpec:
    """The spec with the check's measures attached, as the planner reads them."""
    measures = {
        name: Measure.from_dict(m.model_dump(by_alias=False)) for name, m in check.rungs.items()
    }
    return measured(spec, by_digest(spec, measures))


def plan_after_check(
    sweep: api.ScalingSweep,
    check: api.ModelCheckStatus,
    status: Any,
    patch: kopf.Patch,
    at: str,
) -> tuple[api.ScalingSweep, Plan] | str | None:
    """A class family's sweep and plan once its model check has measured every rung; None while
    it checks (the status says so, `at` its time); the sentence refusing it when the class refused
    a rung or the measured plan cannot run."""
    before, wire = status.get("modelCheck"), check.to_wire()
    if before != wire:
        patch.status["modelCheck"] = replacing(before, wire)
    if check.ready is False:
        return check.message
    if check.ready is None:
        checking = {"type": "Ready", "status": "False", "reason": "CheckingModel",
                    "message": check.message}  # fmt: skip
        said = [{k: c.get(k) for k in checking} for c in status.get("conditions") or []]
        if status.get("phase") != "Pending" or checking not in said:
            patch.status["phase"] = "Pending"
            patch.status["conditions"] = [{**checking, "lastTransitionTime": at}]
        return None
    spec = checked_spec(sweep.spec, check)
    try:
        p = runnable_plan(spec)
    except api.ManifestError as err:
        return str(err)
    return sweep.model_copy(update={"spec": spec}), p


def replacing(old: Any, new: dict[str, Any]) -> dict[str, Any]:
    """The JSON merge patch that turns `old` into `new` (a merge patch only adds and changes
    keys: each key of `old` that `new` lacks is set to null, in nested objects too)."""
    if not isinstance(old, dict):
        return new
    out: dict[str, Any] = {k: None for k in old if k not in new}
    for k, v in new.items():
        out[k] = replacing(old.get(k), v) if isinstance(v, dict) else v
    return out
