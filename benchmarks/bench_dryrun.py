"""What the dry run of a sweep's children (isoflop.cluster.dryrun) adds to an admission: its
seconds on the tests' real API server, against the baseline of one dry-run create of the
ScalingSweep itself (what `kubectl apply` asks of the server anyway), measured in the same run.

One JSON line per sweep shape: the requests the dry run makes (one per distinct child shape, not
per trial), the median and 90th-percentile seconds over `--repeats` runs, and the ratio of the
median to the baseline's.

    python -m benchmarks.bench_dryrun --out benchmarks/results/dryrun-DATE.jsonl
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from isoflop import api
from isoflop.sweep.check import runnable_plan
from tests.corpus import base_manifest
from tests.e2e.cluster import Cluster


def shapes() -> dict[str, dict[str, Any]]:
    one = base_manifest()
    multi = copy.deepcopy(one)
    multi["spec"]["resources"] = {"gpusPerNode": 1, "nodes": 2}
    confirm = copy.deepcopy(one)
    confirm["spec"] |= {"confirm": [1e12], "fit": {**one["spec"]["fit"], "method": "both"}}
    shards = copy.deepcopy(one)
    shards["spec"]["data"]["source"] = "s3://bucket/latents"
    return {"quickstart": one, "two-node": multi, "with-confirm": confirm, "s3-data": shards}


def timed(fn: Any, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, help="append JSON lines here (default: stdout only)")
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args()
    import kubernetes

    from isoflop.cluster import dryrun
    from isoflop.cluster.clients import Clients

    cluster = Cluster(Path(tempfile.mkdtemp(prefix="bench-dryrun-")))
    lines = []
    try:
        cluster.start()
        cluster.kubectl("apply", "-f", "crds/scalingsweep.yaml")
        cluster.kubectl("wait", "--for=condition=Established", "crd/scalingsweeps.isoflop.dev")
        client = kubernetes.config.new_client_from_config(str(cluster.kubeconfig))
        clients = Clients(
            batch=kubernetes.client.BatchV1Api(client), core=kubernetes.client.CoreV1Api(client)
        )
        custom = kubernetes.client.CustomObjectsApi(client)
        one = base_manifest()
        one["metadata"]["namespace"] = "default"
        baseline = timed(
            lambda: custom.create_namespaced_custom_object(
                api.GROUP, api.VERSION, "default", api.PLURAL, one, dry_run="All"
            ),
            args.repeats,
        )
        base = statistics.median(baseline)
        for name, manifest in shapes().items():
            sweep = api.parse_sweep(manifest)
            planned = runnable_plan(sweep.spec)
            requests = len(list(dryrun.children(sweep, planned, "default")))
            assert dryrun.refusal(sweep, planned, "default", clients) is None
            runs = timed(
                lambda s=sweep, p=planned: dryrun.refusal(s, p, "default", clients), args.repeats
            )
            lines.append({
                "bench": "dryrun", "sweep": name, "trials": len(planned.trials),
                "requests": requests, "median_s": statistics.median(runs),
                "p90_s": sorted(runs)[int(0.9 * len(runs))], "baseline_median_s": base,
                "ratio_to_baseline": statistics.median(runs) / base,
                "machine": platform.machine(), "date": time.strftime("%Y-%m-%d"),
            })  # fmt: skip
    finally:
        cluster.stop()
        cluster.remove()
    for line in lines:
        print(json.dumps(line))
    if args.out:
        with args.out.open("a") as f:
            f.writelines(json.dumps(line) + "\n" for line in lines)


if __name__ == "__main__":
    main()
