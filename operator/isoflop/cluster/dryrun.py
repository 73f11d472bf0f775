"""Before anything runs, ask the API server whether it would take what the sweep will create.

The offline rules (isoflop.api) are a first line; the API server has the last word on a trial's
Job, its pod and its Service: node affinity operators and values, selector shapes, resource
names, and the admission of its pods (a missing PriorityClass or ServiceAccount, a namespace's
Pod Security level). A sweep that passed the first line and fails the server would spend its
failure budget trial by trial, or wait for pods the Job controller can never create. So one
object of each distinct shape the sweep will create (a trial's Job, its pod, a multi-node trial's
Service; the confirmation's Job and pod; the data check's and the model check's) is sent with
dryRun=All: the webhook does so before the sweep is stored, the operator again before its first
launch, and `isoflop validate --server` from a user's machine. A refusal is the server's own
sentence; what says nothing about the sweep (the checker's own missing rights, a full quota, a
server under load) is no refusal.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
from collections.abc import Iterator
from typing import Any

from kubernetes.client.rest import ApiException

from isoflop import api
from isoflop.cluster.clients import Clients, server_message
from isoflop.cluster.manifests import (
    BUDGET_LABEL,
    TRIAL_LABEL,
    cluster_config,
    data_check_job,
    model_check_job,
    trial_objects,
)
from isoflop.sweep.confirm import confirm_id, resources_spec
from isoflop.sweep.plan import Plan
from isoflop.sweep.trials import train_config

log = logging.getLogger(__name__)
DRY_RUN = "All"


def children(
    sweep: api.ScalingSweep, plan: Plan | None, namespace: str, default_queue: str | None = None
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(what, object) for each distinct shape of child the sweep will create, a Job's pod after
    its Job. Without a plan (a class family before its model check) only the check Jobs."""
    spec = sweep.spec
    if spec.model.is_class_family:
        job = model_check_job(sweep, "", namespace, {}, "dry-run", default_queue)
        yield from _with_pod("the model check", job)
    if not spec.data.source.startswith("procedural://"):
        yield from _with_pod("the data check", data_check_job(sweep, "", namespace, default_queue))
    if plan is None or not plan.trials:
        return
    smallest, largest = plan.trials[0], max(plan.trials, key=lambda t: t.params)
    shapes = [("a trial", sweep, smallest)]
    if largest is not smallest:  # packed or not, on one node or several: the two ends
        shapes.append(("the largest trial", sweep, largest))
    if spec.confirm:
        confirming = sweep.model_copy(update={"spec": resources_spec(spec)})
        trial = dataclasses.replace(largest, id=confirm_id(spec.confirm[0]))
        shapes.append(("a confirmation", confirming, trial))
    seen: set[str] = set()
    for what, owner, trial in shapes:
        cfg = train_config(owner.spec, owner.name, trial, **cluster_config(owner, trial))
        for obj in trial_objects(owner, "", namespace, trial, cfg, default_queue):
            key = _shape(obj)
            if key in seen:
                continue
            seen.add(key)
            if obj["kind"] == "Job":
                yield from _with_pod(what, obj)
            else:
                yield f"{what}'s headless Service", obj


def _with_pod(what: str, job: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """The Job, and the pod its controller would make of its template (pod admission: the
    PriorityClass, the ServiceAccount, Pod Security, which the Job's own create never sees)."""
    yield f"{what}'s Job", job
    template = job["spec"]["template"]
    name = job["metadata"]["name"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": f"{name[:50]}-",
            "namespace": job["metadata"]["namespace"],
            "labels": {**(template.get("metadata") or {}).get("labels", {}), "job-name": name},
        },
        "spec": copy.deepcopy(template["spec"]),
    }
    yield f"{what}'s pod", pod


def _shape(obj: dict[str, Any]) -> str:
    """What makes two objects the same to the API server: all but the trial's own (names,
    labels, the trainer's arguments and environment); resources, placement and identity stay."""
    bare = copy.deepcopy(obj)
    bare["metadata"] = {"kind": obj["kind"]}
    template = (bare.get("spec") or {}).get("template") or {}
    for container in (template.get("spec") or {}).get("containers") or []:
        container.pop("args", None)
        container.pop("env", None)
    text = json.dumps(bare, sort_keys=True, default=str)
    labels = obj["metadata"].get("labels") or {}
    for own in (obj["metadata"]["name"], labels.get(TRIAL_LABEL), labels.get(BUDGET_LABEL)):
        if own:  # the Job's name in its pods' subdomain, the trial in selectors and labels
            text = text.replace(json.dumps(own), '"*"')
    return hashlib.sha256(text.encode()).hexdigest()


def _unowned(obj: dict[str, Any]) -> dict[str, Any]:
    """The object without owners (the sweep, at admission, or its Job does not exist yet); a
    Job under a generated name, so that the trial's own Job, once it exists, does not answer
    for it (a conflict says nothing); its name's rules are the sweep's (isoflop.api)."""
    out = copy.deepcopy(obj)
    out["metadata"].pop("ownerReferences", None)
    if obj["kind"] == "Job":
        out["metadata"]["generateName"] = out["metadata"].pop("name")[:52] + "-"
    return out


def says_nothing(err: ApiException) -> bool:
    """A refusal that is no verdict on the sweep: the checker may not create such objects (its
    own rights), a quota is full for now, the object exists already, or the server is busy."""
    message = server_message(err)
    if err.status == 409:
        return True
    if err.status == 403:
        return "cannot create resource" in message or "exceeded quota" in message
    return err.status not in (400, 403, 404, 422)


def create(clients: Clients, namespace: str, obj: dict[str, Any]) -> None:
    body = _unowned(obj)
    if obj["kind"] == "Job":
        clients.batch.create_namespaced_job(namespace, body, dry_run=DRY_RUN)
    elif obj["kind"] == "Pod":
        clients.core.create_namespaced_pod(namespace, body, dry_run=DRY_RUN)
    else:
        clients.core.create_namespaced_service(namespace, body, dry_run=DRY_RUN)


def refusal(
    sweep: api.ScalingSweep,
    plan: Plan | None,
    namespace: str,
    clients: Clients,
    default_queue: str | None = None,
) -> str | None:
    """The sentence saying which child the API server would refuse and why (its own words);
    None when it takes them all (or says nothing about the sweep)."""
    for what, obj in children(sweep, plan, namespace, default_queue):
        try:
            create(clients, namespace, obj)
        except ApiException as err:
            if says_nothing(err):
                level = logging.DEBUG if err.status == 409 else logging.WARNING
                log.log(level, "dry run of %s not judged: %s", what, server_message(err))
                continue
            return f"the API server would refuse {what}: {server_message(err)}"
    return None


def digest(spec: api.ScalingSweepSpec) -> str:
    """What a dry run held for: the whole spec (a changed one is checked again)."""
    wire = json.dumps(spec.to_wire(), sort_keys=True)
    return hashlib.sha256(wire.encode()).hexdigest()[:16]
