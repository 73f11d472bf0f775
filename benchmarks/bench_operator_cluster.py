"""Operator cost per trial on a real control plane: API requests, writes, memory, status size.

The same sweeps as `bench_operator.py` (the kmock emulator), on the end-to-end tests' control plane
(kube-apiserver, etcd, controller-manager, scheduler, kwok; `make cluster` builds them): the chart
is installed with helm, the operator runs with its ServiceAccount's token, and the API server's
audit log counts every request that ServiceAccount makes. Trial pods run on fake kwok nodes and
end, with a termination message, as soon as they run. One JSON line per sweep size; the first
size, measured in the same run, is the baseline for the ratios.

    .venv/bin/python -m benchmarks.bench_operator_cluster [--sizes 100 1000 4096]
    .venv/bin/python -m benchmarks.bench_operator_cluster --sizes 600 --kill-every 0 4 2 1

With --queue-gpus, the sweep's Jobs go through Kueue (built by `make cluster`, run as the
end-to-end tests run it: tests/e2e/kueue.py) with a ClusterQueue of that many GPUs (0: no queue,
the baseline); each line adds the queue wait per trial (Job created to admitted, from the Job's
Suspended condition), the launch latency (Job created to its pod running, both from the server's
timestamps, whole seconds) and Kueue's own CPU seconds.

    .venv/bin/python -m benchmarks.bench_operator_cluster --sizes 600 --queue-gpus 0 200 50

With --kill-every, the operator is SIGKILLed and restarted every few seconds (a crash loop: an
OOM kill, a failing liveness probe); one line per size and interval counts the kills, the
results lost (a trial's record differs from what its pod reported), the Jobs the server created
twice (from the audit log), the trials recorded between two kills, and whether the sweep
finished before --deadline seconds (else its phase is "Stalled", with the progress it made).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import kubernetes

from benchmarks.bench_operator import manifest
from tests.e2e.cluster import EXIT_CODE, MESSAGE, Cluster, env_with
from tests.e2e.kueue import Kueue

ROOT = Path(__file__).resolve().parents[1]
NAMESPACE = "isoflop-system"
WRITES = ("create", "update", "patch", "delete")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def requests(log: Path) -> Counter[str]:
    """The operator's requests by verb and resource, from the audit log (one per audit ID)."""
    seen: set[str] = set()
    out: Counter[str] = Counter()
    for line in log.read_text().splitlines():
        event = json.loads(line)
        if event["auditID"] in seen:
            continue
        seen.add(event["auditID"])
        ref = event.get("objectRef") or {}
        resource = ref.get("resource", "-") + (
            f"/{ref['subresource']}" if "subresource" in ref else ""
        )
        out[f"{event['verb']}:{resource}"] += 1
    return out


def created_jobs(log: Path) -> Counter[str]:
    """Jobs the server created (201), by name, from the audit log: a second one is a duplicate."""
    out: Counter[str] = Counter()
    for line in log.read_text().splitlines():
        event = json.loads(line)
        ref = event.get("objectRef") or {}
        code = (event.get("responseStatus") or {}).get("code")
        complete = event.get("stage") == "ResponseComplete"
        if complete and event["verb"] == "create" and ref.get("resource") == "jobs" and code == 201:
            out[ref.get("name") or "-"] += 1
    return out


def start_operator(env: dict[str, str], log: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "kopf", "run", "--module=isoflop.cluster.handlers",
         "--all-namespaces", "--standalone"],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip


def stored_records(core: Any) -> int:
    selector = "isoflop.dev/role=trial-records"
    maps = core.list_namespaced_config_map("default", label_selector=selector)
    return sum(len(cm.data or {}) for cm in maps.items)


def spread(values: list[float]) -> dict[str, float] | None:
    """Median, 95th percentile and maximum, in seconds; None for no values."""
    if not values:
        return None
    p95 = statistics.quantiles(values, n=20)[-1] if len(values) > 1 else values[0]
    return {"median": statistics.median(values), "p95": round(p95, 1), "max": max(values)}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def start_kueue(cluster: Cluster, root: Path, gpus: int) -> Kueue:
    """Kueue with one ClusterQueue of `gpus` GPUs over the kwok nodes, and the LocalQueue
    'bench' in the sweep's namespace."""
    kueue = Kueue(cluster, root / "kueue").start()
    kueue.apply("ResourceFlavor", "kwok", {"nodeLabels": {"type": "kwok"}})
    quota = {"cpu": "100000", "memory": "100Ti", "nvidia.com/gpu": str(gpus)}
    group = {
        "coveredResources": list(quota),
        "flavors": [
            {
                "name": "kwok",
                "resources": [{"name": r, "nominalQuota": q} for r, q in quota.items()],
            }
        ],
    }
    kueue.apply("ClusterQueue", "bench", {"namespaceSelector": {}, "resourceGroups": [group]})
    kueue.apply("LocalQueue", "bench", {"clusterQueue": "bench"}, namespace="default")
    return kueue


def queue_figures(client: Any) -> dict[str, Any]:
    """Per trial Job: created -> admitted (the Job's Suspended condition turning False) and
    created -> its pod running (the pod's startTime), from the server's timestamps."""
    jobs = kubernetes.client.BatchV1Api(client).list_namespaced_job("default").items
    created = {j.metadata.name: j.metadata.creation_timestamp for j in jobs}
    waits = [
        (c.last_transition_time - j.metadata.creation_timestamp).total_seconds()
        for j in jobs
        for c in (j.status.conditions or [])
        if c.type == "Suspended" and c.status == "False"
    ]
    pods = kubernetes.client.CoreV1Api(client).list_namespaced_pod("default").items
    launch = [
        (p.status.start_time - created[p.metadata.labels["job-name"]]).total_seconds()
        for p in pods
        if p.status.start_time and p.metadata.labels.get("job-name") in created
    ]
    return {"queue_wait_s": spread(waits), "launch_to_running_s": spread(launch)}


def measure(
    trials: int,
    root: Path,
    kill_every: float | None = None,
    deadline: float = 3600,
    queue_gpus: int = 0,
) -> dict[str, Any]:
    """One sweep of `trials` trials; with kill_every, the operator is SIGKILLed and restarted at
    random intervals of about that many seconds, and lost results and duplicate Jobs are counted;
    with queue_gpus, its Jobs wait in a Kueue queue of that many GPUs."""
    rng = random.Random(trials)
    name = f"cluster-{trials}-{kill_every}-{queue_gpus}"
    cluster = Cluster(root / name, audit_namespace=NAMESPACE)
    cluster.start()
    operator = None
    kueue = None
    try:
        helm = ROOT / ".tools" / "bin" / "helm"
        subprocess.run(
            [str(helm), "install", "isoflop", str(ROOT / "helm" / "isoflop"), "-n", NAMESPACE,
             "--create-namespace", "--kubeconfig", str(cluster.kubeconfig),
             # nothing serves the webhook's Service here (kwok pods run no process)
             "--set", "admission.enabled=false"],
            check=True, capture_output=True, timeout=180,
        )  # fmt: skip
        for i in range(max(2, trials // 100 + 1)):
            cluster.add_gpu_node(f"gpu-{i}", gpus=64)
        account = cluster.kubectl(
            "get", "sa", "-n", NAMESPACE, "-l", "app.kubernetes.io/name=isoflop-operator",
            "-o", "jsonpath={.items[0].metadata.name}",
        ).stdout  # fmt: skip
        if queue_gpus:
            kueue = start_kueue(cluster, root / name, queue_gpus)
        token = cluster.service_account_kubeconfig(NAMESPACE, account, root / "sa.kubeconfig")
        env = env_with(token) | {"ISOFLOP_RECONCILE_SECONDS": "1"}
        log = open(root / f"operator-{trials}.log", "wb")  # noqa: SIM115 - closed below
        operator = start_operator(env, log)
        kills = 0
        next_kill = time.monotonic() + rng.uniform(0.5, 1.5) * (kill_every or math.inf)
        reported: dict[str, float] = {}
        time.sleep(3)
        obj = manifest(f"sweep{trials}", trials)
        obj["metadata"] = {"name": obj["metadata"]["name"], "namespace": "default"}
        obj["spec"]["resources"] = {"cpu": "100m", "memory": "64Mi"}
        if queue_gpus:
            obj["spec"]["resources"]["queueName"] = "bench"
        start = time.perf_counter()
        cluster.kubectl("apply", "-f", "-", stdin=json.dumps(obj))
        client = kubernetes.config.new_client_from_config(config_file=str(cluster.kubeconfig))
        core = kubernetes.client.CoreV1Api(client)
        custom = kubernetes.client.CustomObjectsApi(client)
        ended: set[str] = set()
        progress = [0]  # trials recorded at each kill
        phase = "Stalled"
        while time.perf_counter() - start < deadline:
            sweep = custom.get_namespaced_custom_object(
                "isoflop.dev", "v1alpha1", "default", "scalingsweeps", obj["metadata"]["name"]
            )
            if (sweep.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                phase = sweep["status"]["phase"]
                break
            if kill_every and time.monotonic() > next_kill:
                operator.kill()  # no shutdown, no cleanup: a crash or an evicted pod
                operator.wait()
                kills += 1
                progress.append(stored_records(core))
                operator = start_operator(env, log)
                next_kill = time.monotonic() + rng.uniform(0.5, 1.5) * kill_every
            running = core.list_namespaced_pod("default", field_selector="status.phase=Running")
            for pod in running.items:
                if pod.status.phase != "Running" or pod.metadata.name in ended:
                    continue
                ended.add(pod.metadata.name)
                loss = 1.0 + (hash(pod.metadata.name) % 97) / 1000
                reported[pod.metadata.labels["isoflop.dev/trial"]] = loss
                result = json.dumps({"status": "succeeded", "eval_loss": loss})
                core.patch_namespaced_pod(
                    pod.metadata.name,
                    "default",
                    {"metadata": {"annotations": {EXIT_CODE: "0", MESSAGE: result}}},
                )
            time.sleep(0.5)
        seconds = time.perf_counter() - start
        rss = peak_rss_mib(operator.pid)
        size = len(json.dumps(sweep, separators=(",", ":")))
        maps = core.list_namespaced_config_map(
            "default", label_selector="isoflop.dev/role=trial-records"
        ).items
        map_sizes = [len(json.dumps(client.sanitize_for_serialization(m))) for m in maps]
        stored = sum(len(cm.data or {}) for cm in maps)
        kept = {
            tid: json.loads(text)["loss"]
            for cm in maps
            for tid, text in (cm.data or {}).items()
            if json.loads(text)["phase"] == "Succeeded"
        }
        lost = sum(kept.get(tid) != loss for tid, loss in reported.items())
        moved = [b - a for a, b in itertools.pairwise(progress)]
        creates = created_jobs(cluster.audit_log)
        ours = requests(cluster.audit_log)
        total = sum(ours.values())
        writes = sum(n for k, n in ours.items() if k.split(":")[0] in WRITES)
        queued = queue_figures(client)
        kueue_cpu = None
        if kueue is not None and kueue.proc is not None:
            kueue_cpu = round(cpu_seconds(kueue.proc.pid), 1)
        return {
            "bench": "operator-cluster",
            "server": "kube-apiserver v1.37.2",
            "trials": trials,
            "kill_every_s": kill_every,
            "queue_gpus": queue_gpus or None,  # None: no queue
            "queue": "kueue v0.17.0" if queue_gpus else None,
            **queued,
            "kueue_cpu_s": kueue_cpu,
            "phase": phase,
            "progress": (sweep.get("status") or {}).get("progress"),
            "api_requests": total,
            "requests_per_trial": round(total / trials, 2),
            "writes_per_trial": round(writes / trials, 2),
            "by_kind": dict(ours.most_common(8)),
            "seconds": round(seconds, 1),
            "operator_peak_rss_mib": round(rss, 1),
            "sweep_object_bytes": size,
            "status_bytes": len(json.dumps(sweep["status"], separators=(",", ":"))),
            "records_configmaps": len(maps),
            "records_stored": stored,
            "largest_records_configmap_bytes": max(map_sizes, default=0),
            "operator_kills": kills,
            "recorded_per_restart": round(sum(moved) / len(moved), 1) if moved else None,
            "restarts_recording_nothing": sum(m == 0 for m in moved),
            "lost_results": lost,
            "duplicate_jobs": sum(n - 1 for n in creates.values() if n > 1),
        }
    finally:
        if operator is not None:
            operator.terminate()
            operator.wait(timeout=30)
        if kueue is not None:
            kueue.stop()
        cluster.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    ap.add_argument(
        "--kill-every",
        type=float,
        nargs="+",
        default=[None],
        help="SIGKILL and restart the operator about every this many seconds (one run each; 0: "
        "never, the baseline)",
    )
    ap.add_argument(
        "--deadline", type=float, default=3600, help="seconds before a sweep counts as stalled"
    )
    ap.add_argument(
        "--queue-gpus",
        type=int,
        nargs="+",
        default=[0],
        help="through a Kueue ClusterQueue of this many GPUs (one run each; 0: no queue)",
    )
    ap.add_argument("--label", default="", help="said in every line (e.g. which operator code ran)")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-operator-cluster-"))
    base = None
    for n in args.sizes:
        for every, gpus in itertools.product(args.kill_every, args.queue_gpus):
            line = {"label": args.label} | measure(n, root, every, args.deadline, gpus)
            if base is None:
                base = line
            else:
                for key in ("requests_per_trial", "writes_per_trial", "seconds"):
                    line[f"{key}_vs_baseline"] = round(line[key] / base[key], 3)
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
