"""The operator's Kubernetes clients, made once at startup, and the few calls every part of it
makes: a Job's pods, deleting a Job, the API server's own words for a refusal."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import kubernetes
from kubernetes.client.rest import ApiException


@dataclass
class Clients:
    batch: Any
    core: Any
    authorization: Any = None
    custom: Any = None  # other controllers' resources (Kueue's Workloads)


def make_clients() -> Clients:
    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        # the kubernetes package snapshots $KUBECONFIG at import: pass the path explicitly
        kubernetes.config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
    client = kubernetes.client.ApiClient()
    return Clients(
        kubernetes.client.BatchV1Api(client),
        kubernetes.client.CoreV1Api(client),
        kubernetes.client.AuthorizationV1Api(client),
        kubernetes.client.CustomObjectsApi(client),
    )


def server_message(err: ApiException) -> str:
    """The API server's own explanation of a refusal (its Status object's message)."""
    try:
        body = json.loads(err.body or "")
    except (TypeError, ValueError):
        body = None
    message = body.get("message") if isinstance(body, dict) else None
    return str(message or err.reason or f"HTTP {err.status}")[:1000]


def delete_job(clients: Clients, name: str, namespace: str) -> None:
    """Delete a Job, and through owner references its pods and Service; gone already is fine."""
    try:
        clients.batch.delete_namespaced_job(name, namespace, propagation_policy="Background")
    except ApiException as err:
        if err.status != 404:
            raise


class Raw(dict[str, Any]):
    """A Kubernetes object as its JSON, read as the client's models are (`pod.status.phase`,
    snake_case attributes, None where absent) without building them: the client deserializes
    600 Jobs in about 1.2 s, json in 0.06 s, and a restarted operator lists every Job and pod of
    a sweep before it can keep anything."""

    def __getattr__(self, name: str) -> Any:
        first, *rest = name.split("_")
        return _raw(self.get(first + "".join(part.title() for part in rest)))


def _raw(value: Any) -> Any:
    if isinstance(value, dict):
        return Raw(value)
    if isinstance(value, list):
        return [_raw(v) for v in value]
    return value


def list_raw(call: Any, namespace: str, selector: str) -> list[Raw]:
    """The items of a namespaced list call (list_namespaced_job, ...) matching a label selector,
    as Raw objects."""
    response = call(namespace, label_selector=selector, _preload_content=False)
    return [Raw(item) for item in json.loads(response.data)["items"]]


def pods_by_job(clients: Clients, namespace: str, selector: str) -> dict[str, list[Any]]:
    """The pods matching a label selector in one list, grouped by their Job (its `job-name`
    label): one request for every Job of a sweep, however many there are."""
    out: dict[str, list[Any]] = {}
    for pod in list_raw(clients.core.list_namespaced_pod, namespace, selector):
        job = (pod.metadata.labels or {}).get("job-name")
        if job is not None:
            out.setdefault(job, []).append(pod)
    return out
