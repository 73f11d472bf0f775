"""What Kueue says about a sweep's queued Jobs: why they wait.

A Job that Kueue has not admitted has a Workload (owned by the Job) whose QuotaReserved condition
is False with Kueue's reason: not enough quota left ("insufficient unused quota for
nvidia.com/gpu in flavor h100, 1 more needed"), a LocalQueue or ClusterQueue that does not exist,
an inactive ClusterQueue. The status's message carries the most common one, so that a sweep
waiting on quota does not look stalled. Read only while some trial is Queued: one list of the
namespace's Workloads per reconcile. A cluster without Kueue (no such resource) or an operator
without the right to list Workloads says nothing.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Collection

from kubernetes.client.rest import ApiException

from isoflop.cluster.clients import Clients

GROUP, VERSION, PLURAL = "kueue.x-k8s.io", "v1beta2", "workloads"
REASON_CHARS = 300


def waiting_reason(clients: Clients, namespace: str, jobs: Collection[str]) -> str | None:
    """Kueue's most common reason for not admitting these Jobs, or None when it gives none."""
    if not jobs or clients.custom is None:
        return None
    try:
        response = clients.custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, _preload_content=False
        )
    except ApiException as err:
        if err.status in (403, 404):  # no Kueue here, or no right to read its Workloads
            return None
        raise
    reasons: Counter[str] = Counter()
    for workload in json.loads(response.data).get("items") or []:
        owners = {
            o.get("name")
            for o in (workload.get("metadata") or {}).get("ownerReferences") or []
            if o.get("kind") == "Job"
        }
        if owners.isdisjoint(jobs):
            continue
        for c in (workload.get("status") or {}).get("conditions") or []:
            if c.get("type") == "QuotaReserved" and c.get("status") == "False" and c.get("message"):
                reasons[str(c["message"])] += 1
    if not reasons:
        return None
    message, _ = min(reasons.items(), key=lambda kv: (-kv[1], kv[0]))  # most common, then stable
    return message[:REASON_CHARS]
