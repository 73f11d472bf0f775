"""What the operator acts on: a usable name and a valid spec that can be planned, within the
installation's policy; the fields that define a sweep kept as first admitted; and the sender's
rights, asked of the API server (the admission webhook's questions: isoflop.cluster.admission)."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import kubernetes

from isoflop import api
from isoflop.cluster import admission, policy
from isoflop.cluster.clients import Clients
from isoflop.cluster.manifests import DEFAULT_QUEUE_ENV
from isoflop.sweep.check import runnable_plan
from isoflop.sweep.plan import Plan
from isoflop.tracking.auth import DEFAULT_URI_ENV
from isoflop.tracking.experiment import tracking_uri

IMMUTABLE = (  # what defines a sweep
    ("model", "family"),
    ("model", "transformer"),
    ("model", "arguments"),
    ("data",),
    ("flopsAccounting",),
)


def admissible(name: str, spec: Any, memo: Any) -> tuple[api.ScalingSweepSpec, Plan | None]:
    """The spec and plan of a sweep the operator may run: a usable name, a valid spec that can be
    planned, and nothing the installation's policy forbids; else a ManifestError's sentence.
    A class family (diffusers, custom) has no plan until its model check Job has measured its
    rungs (`isoflop.cluster.modeljob`): its plan is None here, and checked after the check."""
    api.parse_name(name)
    parsed = api.parse_spec(dict(spec))
    p = None if parsed.model.is_class_family else runnable_plan(parsed)
    if parsed.strategy.wsd_branches is not None and not parsed.storage.checkpoints:
        raise api.ManifestError(
            "spec.strategy.wsdBranches needs spec.storage.checkpoints on a cluster: each branch "
            "starts from a checkpoint its stable run's pod wrote there"
        )
    packing = parsed.resources.packing
    if packing is not None and packing.shared_gpu_resource is None:
        raise api.ManifestError(
            "spec.resources.packing needs sharedGpuResource and replicasPerGpu on a cluster: "
            "packed trials request the resource a GPU-sharing device plugin (NVIDIA time-slicing "
            "or MPS) advertises, e.g. nvidia.com/gpu.shared, in place of whole GPUs"
        )
    res = parsed.resources
    if res.workload_priority_class and not (res.queue_name or os.environ.get(DEFAULT_QUEUE_ENV)):
        raise api.ManifestError(
            "spec.resources.workloadPriorityClass needs a Kueue queue: set "
            "spec.resources.queueName (this installation has no default queue, queue.default)"
        )
    if parsed.tracking.mlflow is not None and not tracking_uri(parsed, os.environ, DEFAULT_URI_ENV):
        raise api.ManifestError(
            "spec.tracking.mlflow names no trackingUri and this installation has no default "
            "MLflow server (tracking.mlflow.trackingUri)"
        )
    refused = policy.check(parsed, getattr(memo, "policy", None) or policy.Policy())
    if refused is not None:
        raise api.ManifestError(refused)
    return parsed, p


def identity(spec: api.ScalingSweepSpec) -> dict[str, str]:
    """A digest of each field that defines a sweep (defaults filled in)."""
    wire = spec.to_wire()
    return {
        ".".join(path): hashlib.sha256(
            json.dumps(get_path(wire, path), sort_keys=True).encode()
        ).hexdigest()[:16]
        for path in IMMUTABLE
    }


def changed_identity(spec: api.ScalingSweepSpec, status: Any) -> str | None:
    """The sentence refusing a spec whose defining fields differ from the admitted ones; None
    when they match (or nothing was admitted yet)."""
    admitted = (status or {}).get("admitted")
    if not isinstance(admitted, dict):
        return None
    for path, digest in identity(spec).items():
        if admitted.get(path) not in (None, digest):
            return f"spec.{path} is immutable; restore it, or create a new sweep instead"
    return None


def get_path(obj: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        obj = obj.get(key) if isinstance(obj, dict) else None
    return obj


def can(clients: Clients, userinfo: Any, namespace: str, access: admission.Access) -> bool:
    """The API server's answer (a SubjectAccessReview) to whether the user may do this."""
    review = kubernetes.client.V1SubjectAccessReview(
        spec=kubernetes.client.V1SubjectAccessReviewSpec(
            user=userinfo.get("username"),
            groups=userinfo.get("groups"),
            uid=userinfo.get("uid"),
            extra=userinfo.get("extra"),
            resource_attributes=kubernetes.client.V1ResourceAttributes(
                namespace=namespace,
                verb=access.verb,
                group=access.group,
                resource=access.resource,
                name=access.name,
            ),
        )
    )
    answer = clients.authorization.create_subject_access_review(review)
    return bool(answer.status and answer.status.allowed)
