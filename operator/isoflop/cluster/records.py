"""Where the operator keeps each finished trial's record: one ConfigMap per budget, owned by
the sweep (so deleting the sweep collects them).

The status holds per-budget summaries only, so it stays far under the API server's object size
limit at the largest sweep the API allows, and a status patch stays small; a finished trial costs
one small merge patch of its budget's ConfigMap. The records are the operator's memory across
restarts: Jobs may be gone (TTL, deletion), the records stay. They are written before the status
that counts them, so a crash between the two loses nothing (the Job is read again).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from kubernetes.client.rest import ApiException

from isoflop import api
from isoflop.cluster.manifests import (
    RECORDS,
    ROLE_LABEL,
    SWEEP_LABEL,
    records_configmap,
    records_name,
)


def read(core: Any, namespace: str, sweep: str) -> dict[str, api.TrialRecord]:
    """Every record of the sweep's ConfigMaps (trial ID -> record); unreadable entries skipped."""
    selector = f"{SWEEP_LABEL}={sweep},{ROLE_LABEL}={RECORDS}"
    out: dict[str, api.TrialRecord] = {}
    for cm in core.list_namespaced_config_map(namespace, label_selector=selector).items:
        labels = cm.metadata.labels or {}
        if labels.get(SWEEP_LABEL) != sweep or labels.get(ROLE_LABEL) != RECORDS:
            continue  # the label selector may be ignored (test emulators): filter here too
        for tid, text in (cm.data or {}).items():
            try:
                out[tid] = api.TrialRecord.model_validate(json.loads(text))
            except ValueError:
                continue  # edited by hand into nonsense: the trial's Job is read again
    return out


def write(
    core: Any,
    sweep: api.ScalingSweep,
    uid: str,
    namespace: str,
    budgets: Mapping[str, float],
    records: Iterable[api.TrialRecord],
) -> None:
    """Add records to their budgets' ConfigMaps (created on first use)."""
    by_budget: dict[float, dict[str, str]] = {}
    for r in records:
        text = json.dumps(r.to_wire(), separators=(",", ":"))
        by_budget.setdefault(budgets[r.id], {})[r.id] = text
    for budget, data in sorted(by_budget.items()):
        name = records_name(sweep.name, budget)
        try:
            core.patch_namespaced_config_map(name, namespace, {"data": data})
        except ApiException as err:
            if err.status != 404:
                raise
            try:
                core.create_namespaced_config_map(
                    namespace, records_configmap(sweep, uid, namespace, budget, data)
                )
            except ApiException as again:
                if again.status != 409:  # created meanwhile: add to it
                    raise
                core.patch_namespaced_config_map(name, namespace, {"data": data})
