"""Sweeps on a shared cluster that queues its batch work with Kueue (tests/e2e/kueue.py): the real
Kueue controller and webhooks, built from sigs.k8s.io/kueue, admitting trial Jobs against a
ClusterQueue of 2 GPUs over kwok GPU nodes, and evicting one for a higher-priority Job."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from isoflop import api
from isoflop.sweep.plan import plan
from tests.e2e.cluster import Cluster, Operator, trial_records
from tests.e2e.kueue import Kueue, missing
from tests.e2e.test_cluster import loss_of, small_sweep, sweep

NAMESPACE = "queued"  # the team's namespace, with its LocalQueue
QUEUE, CLUSTER_QUEUE, FLAVOR = "team", "gpus", "kwok-gpus"
GPU_QUOTA = 2
SWEEPS_PRIORITY, URGENT_PRIORITY = 10, 1000


@pytest.fixture(scope="module")
def kueue(
    cluster: Cluster, installed: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Kueue]:
    lacking = missing()
    if lacking:
        pytest.fail(f"Kueue cannot run here: {', '.join(lacking)}", pytrace=False)
    k = Kueue(cluster, Path(tmp_path_factory.mktemp("kueue")))
    try:
        k.start()
        cluster.kubectl("create", "namespace", NAMESPACE)
        k.apply("ResourceFlavor", FLAVOR, {"nodeLabels": {"type": "kwok"}})
        quota = {"cpu": "1000", "memory": "10Ti", "nvidia.com/gpu": str(GPU_QUOTA)}
        k.apply(
            "ClusterQueue",
            CLUSTER_QUEUE,
            {
                "namespaceSelector": {},
                "preemption": {"withinClusterQueue": "LowerPriority"},
                "resourceGroups": [
                    {
                        "coveredResources": list(quota),
                        "flavors": [
                            {
                                "name": FLAVOR,
                                "resources": [
                                    {"name": r, "nominalQuota": q} for r, q in quota.items()
                                ],
                            }
                        ],
                    }
                ],
            },
        )
        k.apply("LocalQueue", QUEUE, {"clusterQueue": CLUSTER_QUEUE}, namespace=NAMESPACE)
        k.apply("WorkloadPriorityClass", "sweeps", {}, value=SWEEPS_PRIORITY)
        k.apply("WorkloadPriorityClass", "urgent", {}, value=URGENT_PRIORITY)
        cluster.wait_for(
            lambda: (
                "True"
                in cluster.kubectl(
                    "get",
                    "clusterqueue",
                    CLUSTER_QUEUE,
                    "-o",
                    "jsonpath={.status.conditions[?(@.type=='Active')].status}",
                ).stdout
            ),
            60,
            "the ClusterQueue: " + k.log(),
        )
        yield k
    finally:
        cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)
        k.stop()


def queued_sweep(name: str, parallelism: int, **resources: Any) -> dict[str, Any]:
    manifest = small_sweep(name, NAMESPACE)
    manifest["spec"]["parallelism"] = parallelism
    manifest["spec"]["resources"] = resources
    return manifest


def planned(manifest: dict[str, Any], tmp_path: Path) -> tuple[dict[str, Any], Path]:
    """The sweep's trials by ID, and its manifest written for `kubectl apply -f`."""
    trials = {t.id: t for t in plan(api.parse_sweep(manifest).spec).trials}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(manifest))
    return trials, path


def objects(cluster: Cluster, kind: str, name: str) -> list[dict[str, Any]]:
    out = cluster.kubectl(
        "get", kind, "-n", NAMESPACE, "-l", f"isoflop.dev/sweep={name}", "-o", "json"
    )
    return list(json.loads(out.stdout)["items"])


def live(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pods that hold their GPUs: scheduled or running, not being deleted."""
    return [
        p
        for p in pods
        if p["status"].get("phase") in ("Pending", "Running")
        and not p["metadata"].get("deletionTimestamp")
    ]


def finish_running(cluster: Cluster, pods: list[dict[str, Any]], trials: dict[str, Any]) -> None:
    """End every running trial pod with the loss of its trial (once per pod)."""
    for p in live(pods):
        if p["status"].get("phase") != "Running":
            continue
        if "isoflop.test/exit-code" in p["metadata"].get("annotations", {}):
            continue
        t = trials[p["metadata"]["labels"]["isoflop.dev/trial"]]
        result = {"status": "succeeded", "eval_loss": loss_of(t.budget, t.params)}
        cluster.exit_pod(NAMESPACE, p["metadata"]["name"], 0, result)


def counts(cluster: Cluster, name: str) -> dict[str, int]:
    return dict(sweep(cluster, name, NAMESPACE).get("status", {}).get("counts") or {})


def test_a_sweep_in_a_queue_runs_as_many_trials_as_the_quota_admits_and_shows_the_rest_queued(
    cluster: Cluster, kueue: Kueue, installed: Path, tmp_path: Path
) -> None:
    """parallelism 6 against a quota of 2 GPUs: the operator creates 6 Jobs (the bound on what
    one sweep puts in the queue), Kueue admits 2, the status, `kubectl get sweeps` and the
    budgets show the other 4 Queued, and every trial ends with its result."""
    manifest = queued_sweep("kq", 6, queueName=QUEUE, workloadPriorityClass="sweeps")
    trials, path = planned(manifest, tmp_path)
    log = tmp_path / "operator.log"
    operator = Operator(installed, log)
    try:
        cluster.kubectl("apply", "-f", str(path))

        def ready() -> dict[str, Any]:
            status = sweep(cluster, "kq", NAMESPACE).get("status") or {}
            return next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), {})

        # 2 running, 4 queued, and why, in Kueue's words (the Workloads of the queued Jobs)
        said = "2 running, 4 waiting in the queue (Kueue: "
        cluster.wait_for(
            lambda: said in ready().get("message", ""),
            90,
            f"2 running and 4 queued trials: {ready()} {log.read_text()[-2000:]}",
        )
        assert "insufficient unused quota for nvidia.com/gpu" in ready()["message"], ready()
        assert (counts(cluster, "kq")["running"], counts(cluster, "kq")["queued"]) == (2, 4)
        table = cluster.kubectl("get", "scalingsweeps", "-n", NAMESPACE).stdout.splitlines()
        header = table[0].split()
        row = dict(zip(header, table[1].split(), strict=False))
        assert (row["RUNNING"], row["QUEUED"]) == (str(GPU_QUOTA), str(6 - GPU_QUOTA)), table
        status = sweep(cluster, "kq", NAMESPACE)["status"]
        assert sum(b["queued"] for b in status["budgets"]) == 6 - GPU_QUOTA
        jobs = objects(cluster, "jobs", "kq")
        assert len(jobs) == 6  # parallelism bounds what the sweep puts in the queue
        assert all(j["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == QUEUE for j in jobs)
        assert sum(bool(j["spec"].get("suspend")) for j in jobs) == 6 - GPU_QUOTA
        workloads = kueue.workloads(NAMESPACE)
        assert len(workloads) == 6
        assert {w["spec"]["priority"] for w in workloads} == {SWEEPS_PRIORITY}

        most = 0
        deadline = time.monotonic() + 300
        while sweep(cluster, "kq", NAMESPACE).get("status", {}).get("phase") != "Succeeded":
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            assert operator.proc.poll() is None, log.read_text()[-3000:]
            pods = objects(cluster, "pods", "kq")
            most = max(most, len(live(pods)))
            finish_running(cluster, pods, trials)
            time.sleep(0.3)
        saved = trial_records(cluster, "kq", NAMESPACE)
        jobs = objects(cluster, "jobs", "kq")
    finally:
        cluster.kubectl("delete", "scalingsweep", "kq", "-n", NAMESPACE, "--wait=false")
        time.sleep(1)
        operator.stop()
    assert most == GPU_QUOTA  # the quota, never more: 6 Jobs existed at once
    done = {r["id"]: r for r in saved if r["phase"] == "Succeeded"}
    assert set(done) == set(trials)
    assert all(r["attempts"] == 1 for r in done.values())
    assert sorted(j["metadata"]["labels"]["isoflop.dev/trial"] for j in jobs) == sorted(trials)


def test_an_eviction_queues_the_trial_again_with_no_retry_and_one_record_through_operator_kills(
    cluster: Cluster, kueue: Kueue, installed: Path, tmp_path: Path
) -> None:
    """A Job of a higher WorkloadPriorityClass in the same queue evicts a running trial: Kueue
    suspends its Job and its pod goes; the trial is Queued again, never Failed, and when the quota
    comes back Kueue admits the same Job again and the trial finishes, with one attempt and one
    record. The operator is killed while trials are queued and while one is evicted."""
    manifest = queued_sweep("evict", 2, queueName=QUEUE, workloadPriorityClass="sweeps")
    manifest["spec"]["budgets"] = [3e10, 1e11]
    trials, path = planned(manifest, tmp_path)
    log = tmp_path / "operator.log"
    operator = Operator(installed, log)
    urgent = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "urgent",
            "namespace": NAMESPACE,
            "labels": {
                "kueue.x-k8s.io/queue-name": QUEUE,
                "kueue.x-k8s.io/priority-class": "urgent",
            },
        },
        "spec": {
            "suspend": True,
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "main",
                            "image": "urgent:1",
                            "resources": {
                                "requests": {"cpu": "1", "memory": "1Gi"},
                                "limits": {"nvidia.com/gpu": "1"},
                            },
                        }
                    ],
                }
            },
        },
    }
    evicted: str | None = None
    seen_queued_after_eviction = False
    try:
        cluster.kubectl("apply", "-f", str(path))
        cluster.wait_for(
            lambda: len([p for p in live(objects(cluster, "pods", "evict"))
                         if p["status"].get("phase") == "Running"]) == GPU_QUOTA,
            90,
            "two admitted trials running",
        )  # fmt: skip
        pods = live(objects(cluster, "pods", "evict"))
        running = {p["metadata"]["labels"]["isoflop.dev/trial"] for p in pods}
        operator.proc.kill()  # killed with both trials running; the eviction happens while down
        operator.proc.wait()
        cluster.kubectl("apply", "-f", "-", stdin=json.dumps(urgent))

        def suspended_trial() -> str | None:
            for j in objects(cluster, "jobs", "evict"):
                tid = j["metadata"]["labels"]["isoflop.dev/trial"]
                if tid in running and j["spec"].get("suspend"):
                    return str(tid)
            return None

        cluster.wait_for(lambda: suspended_trial() is not None, 60, "an eviction: " + kueue.log())
        evicted = suspended_trial()
        operator = Operator(installed, log)
        cluster.wait_for(
            lambda: counts(cluster, "evict").get("queued", 0) >= 1,
            60,
            f"the evicted trial queued: {counts(cluster, 'evict')} {log.read_text()[-2000:]}",
        )
        status = sweep(cluster, "evict", NAMESPACE)["status"]
        assert status["counts"]["failed"] == 0
        seen_queued_after_eviction = True
        operator.proc.kill()  # killed again while the evicted trial waits
        operator.proc.wait()
        operator = Operator(installed, log)
        # the urgent Job runs on the evicted trial's GPU, then ends: the quota comes back
        cluster.wait_for(
            lambda: any(
                p["status"].get("phase") == "Running"
                for p in json.loads(
                    cluster.kubectl(
                        "get", "pods", "-n", NAMESPACE, "-l", "job-name=urgent", "-o", "json"
                    ).stdout
                )["items"]
            ),
            60,
            "the urgent Job's pod",
        )
        urgent_pods = cluster.kubectl(
            "get", "pods", "-n", NAMESPACE, "-l", "job-name=urgent", "-o", "json"
        ).stdout
        pod = json.loads(urgent_pods)["items"][0]
        cluster.exit_pod(NAMESPACE, pod["metadata"]["name"], 0, {"status": "done"})

        most, kills = 0, 0
        next_kill = time.monotonic() + 2.0
        deadline = time.monotonic() + 300
        while sweep(cluster, "evict", NAMESPACE).get("status", {}).get("phase") != "Succeeded":
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            if kills < 4 and time.monotonic() > next_kill:
                operator.proc.kill()
                operator.proc.wait()
                kills += 1
                operator = Operator(installed, log)
                next_kill = time.monotonic() + 2.0
            pods = objects(cluster, "pods", "evict")
            most = max(most, len(live(pods)))
            finish_running(cluster, pods, trials)
            time.sleep(0.3)
        saved = trial_records(cluster, "evict", NAMESPACE)
        jobs = objects(cluster, "jobs", "evict")
        events = cluster.kubectl("get", "events", "-n", NAMESPACE, "-o", "json").stdout
    finally:
        cluster.kubectl("delete", "scalingsweep", "evict", "-n", NAMESPACE, "--wait=false")
        cluster.kubectl("delete", "job", "urgent", "-n", NAMESPACE, "--wait=false", check=False)
        time.sleep(1)
        operator.stop()
    assert evicted is not None
    assert seen_queued_after_eviction
    assert most <= GPU_QUOTA
    done = {r["id"]: r for r in saved if r["phase"] == "Succeeded"}
    assert set(done) == set(trials), saved
    assert len(saved) == len(trials)  # one record per trial
    assert done[evicted]["attempts"] == 1  # the eviction counted no retry
    assert done[evicted]["loss"] == pytest.approx(
        loss_of(trials[evicted].budget, trials[evicted].params), rel=1e-12
    )
    # the same Job was admitted again: one Job per trial, none failed
    assert sorted(j["metadata"]["labels"]["isoflop.dev/trial"] for j in jobs) == sorted(trials)
    evicted_job = next(j for j in jobs if j["metadata"]["labels"]["isoflop.dev/trial"] == evicted)
    assert evicted_job["status"].get("failed", 0) == 0
    assert evicted_job["status"].get("succeeded") == 1
    # the Job's events: Kueue admitted it twice, the Job controller resumed it twice (an event
    # repeated is one object with a count)
    seen: dict[str, int] = {}
    for e in json.loads(events)["items"]:
        if e["involvedObject"].get("name") == evicted_job["metadata"]["name"]:
            seen[e["reason"]] = seen.get(e["reason"], 0) + (e.get("count") or 1)
    assert (seen.get("Started", 0), seen.get("Resumed", 0)) == (2, 2), seen
    assert seen.get("Preempted", 0) + seen.get("Stopped", 0) >= 1, seen


def test_a_sweep_without_a_queue_runs_as_before_while_kueue_runs(
    cluster: Cluster, kueue: Kueue, installed: Path, tmp_path: Path
) -> None:
    """No queueName (and no default queue): Kueue's webhook leaves the Jobs alone, nothing is
    suspended or queued, and 4 trials run at once whatever the ClusterQueue's quota of 2."""
    manifest = queued_sweep("plain", 4)
    manifest["spec"]["budgets"] = [3e10, 1e11]
    trials, path = planned(manifest, tmp_path)
    log = tmp_path / "operator.log"
    operator = Operator(installed, log)
    try:
        cluster.kubectl("apply", "-f", str(path))
        cluster.wait_for(
            lambda: len(live(objects(cluster, "pods", "plain"))) == 4,
            90,
            f"4 trial pods at once: {log.read_text()[-2000:]}",
        )
        jobs = objects(cluster, "jobs", "plain")
        assert not any(j["spec"].get("suspend") for j in jobs)
        assert not any("kueue.x-k8s.io/queue-name" in j["metadata"]["labels"] for j in jobs)
        owners = {
            o["name"] for w in kueue.workloads(NAMESPACE) for o in w["metadata"]["ownerReferences"]
        }
        assert not owners & {j["metadata"]["name"] for j in jobs}  # Kueue made no Workload
        deadline = time.monotonic() + 300
        while sweep(cluster, "plain", NAMESPACE).get("status", {}).get("phase") != "Succeeded":
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            assert counts(cluster, "plain").get("queued", 0) == 0
            finish_running(cluster, objects(cluster, "pods", "plain"), trials)
            time.sleep(0.3)
        saved = trial_records(cluster, "plain", NAMESPACE)
    finally:
        cluster.kubectl("delete", "scalingsweep", "plain", "-n", NAMESPACE, "--wait=false")
        time.sleep(1)
        operator.stop()
    assert {r["id"] for r in saved if r["phase"] == "Succeeded"} == set(trials)
