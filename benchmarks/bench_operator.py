"""Operator cost per trial: Kubernetes API requests and memory for sweeps of 100 and 1,000 trials.

Real kopf and the real kubernetes client against the kmock emulator on 127.0.0.1, with this script
playing the Job controller (each Job completes with a termination message as soon as it appears).
One JSON line per sweep size; the 100-trial sweep, measured in the same run, is the baseline for
the ratios. Target (shared/DESIGN.md): O(1) API calls per trial, flat operator memory.

    .venv/bin/python -m benchmarks.bench_operator [--sizes 100 1000]   (from the repository root)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import kmock

from tests.operator.emulator import (
    SWEEPS,
    SWEEPS_URL,
    Emulator,
    finish,
    load_operator,
    operator_thread,
    prepare,
    trial_records,
)


def manifest(name: str, trials: int) -> dict[str, Any]:
    # up to the largest sweep the API allows: 64 budgets x 64 rungs = 4,096 trials
    budgets = 10 if trials <= 100 else 20 if trials <= 1280 else 64
    rungs = trials // budgets
    return {
        "apiVersion": "isoflop.dev/v1alpha1",
        "kind": "ScalingSweep",
        "metadata": {
            "name": name,
            "namespace": "default",
            "uid": f"uid-{name}",
            "resourceVersion": "1",
            "generation": 1,
        },
        "spec": {
            "model": {
                "configs": [
                    {"name": f"r{i:03d}", "depth": 2, "width": 64 + 8 * i} for i in range(rungs)
                ],
                "headDim": 8,
            },
            "data": {"latentShape": [3, 16, 16], "textLength": 8, "textDim": 32},
            "budgets": [1e15 * 1.5**b for b in range(budgets)],
            "training": {"globalBatchSize": 16, "minSteps": 1},
            "parallelism": 200,
            "fit": {"method": "parabola", "bootstrap": 100},
        },
    }


async def finish_jobs(k8s: Any, done: set[str]) -> None:
    """Complete every new Job at once, with a termination message."""
    jobs = kmock.resource("batch/v1/jobs")
    for key, obj in list(k8s.objects.items()):
        if key[0] == jobs and not obj.deleted and key[2] not in done:
            done.add(key[2])
            loss = 1.0 + (hash(key[2]) % 97) / 1000
            await finish(k8s, key[2], {"status": "succeeded", "eval_loss": loss})


async def forget_pods(k8s: Any, sweep: str, recorded: set[str]) -> None:
    """Delete the pods of trials whose result the status holds, as a TTL controller would: the
    emulator ignores label selectors, so every pod list would otherwise return every pod."""
    for trial in trial_records(k8s, sweep):
        if trial["phase"] == "Succeeded" and trial["id"] not in recorded:
            recorded.add(trial["id"])
            await k8s.delete(f"/api/v1/namespaces/default/pods/{sweep}-{trial['id']}-x")


def tally(requests: list[Any], ours: Counter[str]) -> None:
    """Count the operator's requests: everything but this script's own (pods, Job status)."""
    for r in requests:
        if r.resource == kmock.resource("v1/pods") and r.action != kmock.action.LIST:
            continue
        if r.resource == kmock.resource("batch/v1/jobs") and r.subresource == "status":
            continue
        ours[f"{r.action}:{r.resource.plural if r.resource else '-'}"] += 1


def drain(k8s: Any, ours: Counter[str], keep: int = 200) -> None:
    """Tally and drop all but the newest requests of the emulator's log. kmock matches each new
    request by scanning its whole log, so a 1,000-trial sweep costs O(requests^2) and the emulator,
    not the operator, sets the pace. The newest ones stay: requests still being served are there."""
    log = k8s._requests  # private, but the only handle on the log; a benchmark-only workaround
    old = log[: max(len(log) - keep, 0)]
    tally(old, ours)
    del log[: len(old)]


async def measure(trials: int) -> dict[str, Any]:
    async with Emulator() as k8s, kmock.Server(k8s):
        kubeconfig = Path(tempfile.mkdtemp()) / "kubeconfig"
        prepare(k8s, kubeconfig)
        os.environ["KUBECONFIG"] = str(kubeconfig)
        name = f"sweep{trials}"
        key = (kmock.resource(SWEEPS), "default", name)
        done: set[str] = set()
        recorded: set[str] = set()
        ours: Counter[str] = Counter()
        async with operator_thread(load_operator(f"isoflop_operator_bench_{trials}")):
            await asyncio.sleep(1.0)
            rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            start = time.perf_counter()
            await k8s.post(SWEEPS_URL, json=manifest(name, trials))
            while (k8s.objects[key].get("status") or {}).get("phase") not in (
                "Succeeded",
                "Failed",
            ):
                await finish_jobs(k8s, done)
                await forget_pods(k8s, name, recorded)
                drain(k8s, ours)
                await asyncio.sleep(0.2)
            seconds = time.perf_counter() - start
            rss_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
        drain(k8s, ours, keep=0)
        total = sum(ours.values())
        status = k8s.objects[key]["status"]
        records = [
            obj
            for k, obj in k8s.objects.items()
            if k[0] == kmock.resource("v1/configmaps") and k[2].startswith(f"{name}-trials-")
        ]
        sizes = [len(json.dumps(cm.get("data") or {}, default=dict)) for cm in records]
        return {
            "bench": "operator",
            "trials": trials,
            "phase": status["phase"],
            "api_requests": total,
            "requests_per_trial": round(total / trials, 2),
            "by_kind": dict(ours.most_common(8)),
            "seconds": round(seconds, 2),
            "maxrss_growth_mib": round(rss_growth / 1024, 1),
            "maxrss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10, 1),
            "status_bytes": len(json.dumps(status, separators=(",", ":"), default=dict)),
            "records_configmaps": len(sizes),
            "largest_records_configmap_data_bytes": max(sizes, default=0),
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    args = ap.parse_args()
    os.environ.setdefault("ISOFLOP_RECONCILE_SECONDS", "1")
    base = None
    for n in args.sizes:
        line = asyncio.run(measure(n))
        if base is None:
            base = line
        else:
            line["requests_per_trial_vs_baseline"] = round(
                line["requests_per_trial"] / base["requests_per_trial"], 3
            )
            line["maxrss_growth_vs_baseline"] = round(
                line["maxrss_growth_mib"] / max(base["maxrss_growth_mib"], 0.1), 2
            )
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
