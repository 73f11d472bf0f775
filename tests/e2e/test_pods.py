"""Trials in real pods: the operator image running as the chart's Deployment on a real kubelet,
its webhook served through the chart's Service, and a sweep applied with kubectl trained by the
trainer image, every trial in a pod of its own (tests/e2e/node.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from isoflop import api
from isoflop.plan import plan
from tests.e2e.cluster import Cluster, trial_records
from tests.e2e.conftest import TRIALS_NAMESPACE
from tests.e2e.node import NODE, Node

ROOT = Path(__file__).resolve().parents[2]


def pod_sweep(name: str, image: str) -> dict[str, Any]:
    """The operator tests' small sweep on 2 budgets, on the real node's CPU: two trials at once
    beside the operator's pod on 2 cores, one torch thread each (as `isoflop run` gives them)."""
    manifest = api.yaml_load((ROOT / "tests" / "operator" / "small-sweep.yaml").read_text())
    manifest["metadata"] = {"name": name, "namespace": TRIALS_NAMESPACE}
    spec = manifest["spec"]
    spec["budgets"] = [3e10, 1e11]
    spec["parallelism"] = 2
    spec["resources"] = {
        "image": image,
        "gpusPerNode": 0,
        "cpu": "900m",
        "memory": "2Gi",
        "nodeSelector": {"kubernetes.io/hostname": NODE},
    }
    spec["storage"] = {"sharedMemory": "256Mi"}
    return manifest  # type: ignore[no-any-return]


def get(cluster: Cluster, kind: str, name: str, namespace: str) -> dict[str, Any]:
    out = cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else {}


def operator_log(cluster: Cluster, deployed: dict[str, str]) -> str:
    return cluster.kubectl(
        "logs", "-n", deployed["namespace"], f"deployment/{deployed['release']}", "--tail=60",
        check=False,
    ).stdout  # fmt: skip


def test_the_operator_runs_as_the_charts_deployment_and_its_webhook_answers_through_its_service(
    cluster: Cluster, node: Node, deployed: dict[str, str], images: dict[str, Any], tmp_path: Path
) -> None:
    namespace = deployed["namespace"]
    pods = json.loads(
        cluster.kubectl(
            "get", "pods", "-n", namespace, "-l", "app.kubernetes.io/name=isoflop-operator",
            "-o", "json",
        ).stdout
    )["items"]  # fmt: skip
    (pod,) = pods
    assert pod["spec"]["nodeName"] == NODE
    (container,) = pod["spec"]["containers"]
    assert container["image"] == images["operator"][0]
    (state,) = pod["status"]["containerStatuses"]
    assert state["ready"] is True
    assert "running" in state["state"]
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    # the process really runs as the chart's user, on a read-only root filesystem
    whoami = cluster.kubectl(
        "exec", "-n", namespace, pod["metadata"]["name"], "--", "python3", "-c",
        "import os, pathlib; print(os.getuid()); pathlib.Path('/opt/isoflop/x').touch()",
        check=False,
    )  # fmt: skip
    assert whoami.stdout.strip() == "10001"
    assert "Read-only file system" in whoami.stderr
    # the webhook: a sweep it refuses never reaches the store; the sentence reaches kubectl
    bad = pod_sweep("refused", images["trainer"][0])
    bad["spec"]["budgets"] = [3e10]  # one budget cannot give a law
    path = tmp_path / "refused.yaml"
    path.write_text(yaml.safe_dump(bad))
    out = cluster.kubectl("apply", "-f", str(path), check=False)
    assert out.returncode != 0
    assert 'admission webhook "scalingsweeps.isoflop.dev" denied the request' in out.stderr
    assert "budget" in out.stderr
    assert get(cluster, "scalingsweep", "refused", TRIALS_NAMESPACE) == {}


def test_a_sweep_applied_with_kubectl_trains_every_trial_in_a_real_pod(
    cluster: Cluster, node: Node, deployed: dict[str, str], images: dict[str, Any], tmp_path: Path
) -> None:
    manifest = pod_sweep("pods", images["trainer"][0])
    trials = {t.id: t for t in plan(api.parse_sweep(manifest).spec).trials}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(manifest))
    started = time.monotonic()
    cluster.kubectl("apply", "-f", str(path))
    try:
        deadline = time.monotonic() + 900
        while get(cluster, "scalingsweep", "pods", TRIALS_NAMESPACE).get("status", {}).get(
            "phase"
        ) not in ("Succeeded", "Failed"):
            assert time.monotonic() < deadline, operator_log(cluster, deployed)
            time.sleep(2)
        wall = time.monotonic() - started
        status = get(cluster, "scalingsweep", "pods", TRIALS_NAMESPACE)["status"]
        records = {r["id"]: r for r in trial_records(cluster, "pods", TRIALS_NAMESPACE)}
        pods = json.loads(
            cluster.kubectl(
                "get", "pods", "-n", TRIALS_NAMESPACE, "-l", "isoflop.dev/sweep=pods", "-o", "json"
            ).stdout
        )["items"]  # fmt: skip
    finally:
        cluster.kubectl("delete", "scalingsweep", "pods", "-n", TRIALS_NAMESPACE, check=False)
    assert status["phase"] == "Succeeded", (status, operator_log(cluster, deployed))
    assert set(records) == set(trials)
    assert all(r["phase"] == "Succeeded" for r in records.values()), records
    assert {r["source"] for r in records.values()} == {"termination-message"}
    # every trial ran in a pod of its own on the real node, admitted under the restricted profile
    assert {p["metadata"]["labels"]["isoflop.dev/trial"] for p in pods} == set(trials)
    assert {p["spec"]["nodeName"] for p in pods} == {NODE}
    for p in pods:
        (terminated,) = [s["state"]["terminated"] for s in p["status"]["containerStatuses"]]
        assert terminated["exitCode"] == 0
        assert json.loads(terminated["message"])["status"] == "succeeded"
    assert abs(status["fit"]["laws"]["params"]["exponent"]) < 5  # a law was fitted from them
    # the same sweep with `isoflop run` on this machine: the same losses
    local = tmp_path / "local"
    local_started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "isoflop.cli", "run", str(path), "--run-dir", str(local), "--plain"],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    local_loss = {
        row["id"]: float(row["loss"])
        for row in _csv(local / "trials.csv")
        if row.get("phase", "Succeeded") == "Succeeded"
    }
    local_wall = time.monotonic() - local_started
    for tid, record in records.items():
        assert record["loss"] == local_loss[tid], tid
    starts = sorted(_start_latency(p) for p in pods)
    median = starts[len(starts) // 2]
    print(
        f"\nreal pods: {len(trials)} trials in {wall:.0f} s in the cluster, {local_wall:.0f} s "
        f"with isoflop run; pod start (created to running) median {median:.0f} s, "
        f"max {starts[-1]:.0f} s"
    )


def _start_latency(pod: dict[str, Any]) -> float:
    """Seconds from a pod's creation to its container's start (the API's 1 s resolution)."""
    from datetime import datetime

    (status,) = pod["status"]["containerStatuses"]
    created = datetime.fromisoformat(pod["metadata"]["creationTimestamp"])
    started = datetime.fromisoformat(status["state"]["terminated"]["startedAt"])
    return (started - created).total_seconds()


def _csv(path: Path) -> list[dict[str, str]]:
    import csv

    with path.open() as f:
        return list(csv.DictReader(f))
