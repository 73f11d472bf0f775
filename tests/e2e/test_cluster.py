"""The operator on a real control plane: installed by helm, running with exactly the chart's RBAC,
sweeps applied with kubectl, trial pods played by kwok on fake GPU nodes."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from isoflop import api
from isoflop.sweep.plan import plan
from isoflop_trainer.components.telemetry import GAUGES, LABELS
from tests.e2e.cluster import Cluster, Operator, free_port, trial_records
from tests.monitoring.conftest import start_prometheus

ROOT = Path(__file__).resolve().parents[2]


def loss_of(budget: float, params: float) -> float:
    """A convex isoFLOP curve per budget whose minimum grows as C^0.5 (inside each ladder)."""
    x_opt = 5.2 + 0.5 * (math.log10(budget) - 10.5)
    return 1.0 - 0.05 * math.log10(budget) + 0.2 * (math.log10(params) - x_opt) ** 2


def small_sweep(name: str, namespace: str = "default") -> dict[str, Any]:
    """The operator tests' small sweep under another name."""
    manifest = api.yaml_load((ROOT / "tests" / "operator" / "small-sweep.yaml").read_text())
    manifest["metadata"] = {"name": name, "namespace": namespace}
    return manifest  # type: ignore[no-any-return]


def sweep(cluster: Cluster, name: str, namespace: str = "default") -> dict[str, Any]:
    out = cluster.kubectl("get", "scalingsweep", name, "-n", namespace, "-o", "json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else {}


def running_trial_pods(cluster: Cluster, sweep_name: str) -> list[dict[str, Any]]:
    pods = json.loads(
        cluster.kubectl(
            "get", "pods", "-n", "default", "-l", f"isoflop.dev/sweep={sweep_name}", "-o", "json"
        ).stdout
    )["items"]
    return [
        p
        for p in pods
        if p["status"].get("phase") == "Running"
        and "isoflop.test/exit-code" not in p["metadata"].get("annotations", {})
    ]


def test_a_sweep_applied_with_kubectl_runs_to_fitted_laws_with_the_charts_rbac(
    cluster: Cluster, installed: Path, tmp_path: Path
) -> None:
    manifest = small_sweep("e2e")
    manifest["spec"]["parallelism"] = 3
    parsed = api.parse_sweep(manifest)
    trials = {t.id: t for t in plan(parsed.spec).trials}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(manifest))
    operator = Operator(installed, tmp_path / "operator.log")
    try:
        cluster.kubectl("apply", "-f", str(path))
        finished: set[str] = set()
        deadline = time.monotonic() + 300
        while sweep(cluster, "e2e").get("status", {}).get("phase") != "Succeeded":
            assert time.monotonic() < deadline, (tmp_path / "operator.log").read_text()[-3000:]
            assert operator.proc.poll() is None, (tmp_path / "operator.log").read_text()[-3000:]
            for pod in running_trial_pods(cluster, "e2e"):
                trial = trials[pod["metadata"]["labels"]["isoflop.dev/trial"]]
                result = {"status": "succeeded", "eval_loss": loss_of(trial.budget, trial.params)}
                cluster.exit_pod("default", pod["metadata"]["name"], 0, result)
                finished.add(trial.id)
            time.sleep(0.3)
        status = sweep(cluster, "e2e")["status"]
        assert status["progress"] == f"{len(trials)}/{len(trials)}"
        assert abs(status["fit"]["laws"]["params"]["exponent"] - 0.5) < 0.05
        done = [t for t in trial_records(cluster, "e2e") if t["phase"] == "Succeeded"]
        assert len(done) == len(trials)
        assert {t["source"] for t in done} == {"termination-message"}
        assert not status.get("trials")  # per-budget summaries; the records are in ConfigMaps
        assert [b["succeeded"] for b in status["budgets"]] == [
            sum(t.budget == b for t in trials.values()) for b in sorted(manifest["spec"]["budgets"])
        ]
        jobs = json.loads(
            cluster.kubectl("get", "jobs", "-n", "default", "-l", "isoflop.dev/sweep=e2e",
                            "-o", "json").stdout
        )["items"]  # fmt: skip
        assert len(jobs) == len(trials)  # one Job per trial, never two
        columns = cluster.kubectl("get", "scalingsweeps", "-n", "default").stdout.splitlines()
        assert columns[0].split()[:3] == ["NAME", "PHASE", "TRIALS"]
        assert columns[1].split()[:3] == ["e2e", "Succeeded", f"{len(trials)}/{len(trials)}"]
        cluster.wait_for(  # events the operator posted, as describe shows them
            lambda: (
                "BudgetsFitted"
                in cluster.kubectl("describe", "scalingsweep", "e2e", "-n", "default").stdout
            ),
            20,
            "the operator's events: "
            + cluster.kubectl("get", "events", "-A", "-o", "wide").stdout[-3000:],
        )
        # deleting the sweep collects its Jobs and pods (ownerReferences, the garbage collector)
        cluster.kubectl("delete", "scalingsweep", "e2e", "-n", "default")
        cluster.wait_for(
            lambda: (
                not cluster.kubectl(
                    "get",
                    "jobs,pods,configmaps",
                    "-n",
                    "default",
                    "-l",
                    "isoflop.dev/sweep=e2e",
                    "-o",
                    "name",
                ).stdout.strip()
            ),
            60,
            "garbage collection of the sweep's Jobs",
        )
    finally:
        operator.stop()


def test_a_sweep_reads_its_results_from_the_real_prometheus(
    cluster: Cluster, installed: Path, tmp_path: Path
) -> None:
    """Trial results through Prometheus, as a cluster with the chart's PodMonitor delivers them:
    each finished trial's gauges (the trainer's own names and labels) are served on 127.0.0.1 and
    scraped by a real Prometheus with the namespace label a Kubernetes scrape attaches. The pods'
    termination messages carry a different loss, so the status shows which source was read."""
    port = free_port()
    registry = CollectorRegistry()
    gauges = {
        name: Gauge(f"isoflop_{name}", doc, LABELS, registry=registry)
        for name, doc in GAUGES.items()
        if name in ("eval_loss", "eval_loss_se", "done")
    }
    exporter, _ = start_http_server(port, addr="127.0.0.1", registry=registry)
    prom = start_prometheus(
        tmp_path / "prometheus",
        free_port(),
        [
            {
                "job_name": "isoflop-trials",
                "static_configs": [
                    {"targets": [f"127.0.0.1:{port}"], "labels": {"namespace": "default"}}
                ],
            }
        ],
        [],
    )
    manifest = small_sweep("scraped")
    manifest["spec"]["parallelism"] = 3
    manifest["spec"]["metrics"] = {"prometheusUrl": prom.url, "lookback": "10m"}
    trials = {t.id: t for t in plan(api.parse_sweep(manifest).spec).trials}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(manifest))
    operator = Operator(installed, tmp_path / "operator.log")
    exported: dict[str, float] = {}
    try:
        cluster.kubectl("apply", "-f", str(path))
        deadline = time.monotonic() + 300
        while sweep(cluster, "scraped").get("status", {}).get("phase") != "Succeeded":
            assert time.monotonic() < deadline, (tmp_path / "operator.log").read_text()[-3000:]
            for pod in running_trial_pods(cluster, "scraped"):
                trial = trials[pod["metadata"]["labels"]["isoflop.dev/trial"]]
                labels = {"sweep": "scraped", "trial": trial.id, "budget": f"{trial.budget:g}"}
                exported[trial.id] = loss_of(trial.budget, trial.params)
                gauges["eval_loss"].labels(**labels).set(exported[trial.id])
                gauges["eval_loss_se"].labels(**labels).set(0.001)
                gauges["done"].labels(**labels).set(1)
                selector = f'namespace="default",sweep="scraped",trial="{trial.id}"'
                prom.wait_for(f"isoflop_done{{{selector}}}", timeout=30)
                message = {"status": "succeeded", "eval_loss": 99.0}  # not what Prometheus has
                cluster.exit_pod("default", pod["metadata"]["name"], 0, message)
            time.sleep(0.3)
        status = sweep(cluster, "scraped")["status"]
        saved = trial_records(cluster, "scraped")
    finally:
        cluster.kubectl("delete", "scalingsweep", "scraped", "-n", "default", check=False)
        operator.stop()
        exporter.shutdown()
        prom.process.terminate()
        prom.process.wait(10)
    records = {r["id"]: r for r in saved if r["phase"] == "Succeeded"}
    assert set(records) == set(trials)
    for tid, record in records.items():
        assert record["source"] == "prometheus"
        assert record["loss"] == pytest.approx(exported[tid], rel=1e-12)
        assert record["metrics"]["loss_se"] == pytest.approx(0.001)
    assert abs(status["fit"]["laws"]["params"]["exponent"] - 0.5) < 0.05


def test_a_multi_node_trials_headless_service_goes_with_its_job(
    cluster: Cluster, installed: Path, tmp_path: Path
) -> None:
    """A trial on 2 nodes gets an Indexed Job and a headless Service that its Job owns: when the
    Job goes (cancelled, expired by its TTL, collected with the sweep), the garbage collector
    takes the Service too (before, the Service stayed until the sweep was deleted)."""
    manifest = small_sweep("multi")
    manifest["spec"]["budgets"] = [3e10, 1e11]  # a law needs 2; parallelism 1 runs one
    manifest["spec"]["parallelism"] = 1
    manifest["spec"]["resources"] = {"nodes": 2, "gpusPerNode": 1, "cpu": "1", "memory": "1Gi"}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(manifest))
    operator = Operator(installed, tmp_path / "operator.log")

    def objects(kind: str) -> list[dict[str, Any]]:
        out = cluster.kubectl("get", kind, "-n", "default", "-l", "isoflop.dev/sweep=multi",
                              "-o", "json")  # fmt: skip
        return json.loads(out.stdout)["items"]  # type: ignore[no-any-return]

    try:
        cluster.kubectl("apply", "-f", str(path))
        cluster.wait_for(
            lambda: bool(objects("services")), 60, "the headless Service: "
            + (tmp_path / "operator.log").read_text()[-2000:],
        )  # fmt: skip
        (service,) = objects("services")
        name = service["metadata"]["name"]
        (job,) = [j for j in objects("jobs") if j["metadata"]["name"] == name]
        assert job["spec"]["completionMode"] == "Indexed"
        (owner,) = service["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"]) == (
            "Job", job["metadata"]["name"], job["metadata"]["uid"]
        )  # fmt: skip
        cluster.kubectl("delete", "job", job["metadata"]["name"], "-n", "default",
                        "--cascade=background")  # fmt: skip
        old = service["metadata"]["uid"]
        cluster.wait_for(
            lambda: old not in {s["metadata"]["uid"] for s in objects("services")},
            60,
            "the garbage collector to take the Service with its Job",
        )
    finally:
        cluster.kubectl("delete", "scalingsweep", "multi", "-n", "default", check=False)
        operator.stop()


def test_a_quota_that_refuses_jobs_puts_the_servers_words_on_the_sweep_until_lifted(
    cluster: Cluster, installed: Path, tmp_path: Path
) -> None:
    """A ResourceQuota allows no Job in the namespace: the server answers 403 on every create.
    The sweep carries an APIError condition with the server's message (before: nothing on the
    sweep, and only the reason, 'Forbidden', in the operator's log); once the quota is lifted,
    the sweep runs and the condition goes."""
    cluster.kubectl("create", "namespace", "quota")
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "no-jobs", "namespace": "quota"},
        "spec": {"hard": {"count/jobs.batch": "0"}},
    }
    cluster.kubectl("apply", "-f", "-", stdin=json.dumps(quota))
    manifest = small_sweep("quota", "quota")
    manifest["spec"]["parallelism"] = 1
    operator = Operator(installed, tmp_path / "operator.log")

    def conditions() -> dict[str, dict[str, Any]]:
        status = sweep(cluster, "quota", "quota").get("status", {})
        return {c["type"]: c for c in status.get("conditions", [])}

    try:
        cluster.kubectl("apply", "-f", "-", stdin=json.dumps(manifest))
        cluster.wait_for(
            lambda: "APIError" in conditions(),
            60,
            "an APIError condition: " + (tmp_path / "operator.log").read_text()[-2000:],
        )
        error = conditions()["APIError"]
        assert error["message"].startswith("the API server answered 403: ")
        assert "quota" in error["message"]  # the server's own explanation
        cluster.kubectl("delete", "resourcequota", "no-jobs", "-n", "quota")
        cluster.wait_for(
            lambda: (
                "APIError" not in conditions()
                and bool(cluster.kubectl("get", "jobs", "-n", "quota", "-o", "name").stdout.strip())
            ),
            90,
            "the sweep to run once the quota is lifted",
        )
    finally:
        cluster.kubectl("delete", "scalingsweep", "quota", "-n", "quota", check=False)
        operator.stop()


def test_the_api_server_itself_refuses_an_edit_of_an_immutable_field(
    cluster: Cluster, installed: Path, tmp_path: Path
) -> None:
    manifest = small_sweep("frozen")
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(manifest))
    cluster.kubectl("apply", "-f", str(path))
    manifest["spec"]["data"]["textDim"] = manifest["spec"]["data"].get("textDim", 768) + 1
    path.write_text(yaml.safe_dump(manifest))
    out = cluster.kubectl("apply", "-f", str(path), check=False)
    assert out.returncode != 0
    assert "immutable" in out.stderr, out.stderr
    cluster.kubectl("delete", "scalingsweep", "frozen", "-n", "default")


def test_a_job_the_server_refuses_ends_the_sweep_before_any_trial_runs(
    cluster: Cluster, installed: Path, tmp_path: Path
) -> None:
    """What the sweep's own rules do not check, the API server may still refuse: node affinity's
    Gt takes exactly one value, which the CRD (like validate) does not count. The operator's dry
    run of a trial's Job finds it before the first launch: InvalidSpec in the server's words,
    no Job, no trial failed, no failure budget spent (it used to fail trial after trial until
    TooManyFailedTrials). The whole child corpus: tests/e2e/test_corpus.py."""
    manifest = small_sweep("refused")
    term = {"matchExpressions": [{"key": "gpu-count", "operator": "Gt", "values": ["1", "2"]}]}
    required = {"nodeSelectorTerms": [term]}
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": required}}
    manifest["spec"]["resources"] = {"affinity": affinity}
    manifest["spec"]["retries"] = {"perTrial": 2, "maxFailedTrials": 1}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(manifest))
    operator = Operator(installed, tmp_path / "operator.log")
    try:
        cluster.kubectl("apply", "-f", str(path))
        cluster.wait_for(
            lambda: sweep(cluster, "refused").get("status", {}).get("phase") == "Failed",
            60,
            "the refused sweep to fail: " + (tmp_path / "operator.log").read_text()[-2000:],
        )
        status = sweep(cluster, "refused")["status"]
        failed = next(c for c in status["conditions"] if c["type"] == "Failed")
        assert failed["reason"] == "InvalidSpec"
        assert failed["message"].startswith("the API server would refuse a trial's Job")
        assert "single value" in failed["message"]  # the server's own explanation
        assert trial_records(cluster, "refused") == []
        jobs = cluster.kubectl(
            "get", "jobs", "-n", "default", "-l", "isoflop.dev/sweep=refused", "-o", "name"
        ).stdout
        assert not jobs.strip()
    finally:
        # the operator's finalizer goes with the operator's own deletion handler: delete first
        cluster.kubectl("delete", "scalingsweep", "refused", "-n", "default", check=False)
        operator.stop()


def test_kills_preemption_and_a_gitops_edit_lose_no_result_and_duplicate_no_job(
    cluster: Cluster, installed: Path, tmp_path: Path
) -> None:
    """The operator is killed (SIGKILL) 20 times while trials finish, one pod is preempted (exit
    143: the Job retries it without counting a failure), and a budget is added by server-side
    apply of the edited manifest, as a GitOps tool does. Every trial ends with its own result, once.
    """
    manifest = small_sweep("chaos")
    manifest["spec"]["parallelism"] = 3
    manifest["spec"]["budgets"] = [3e10, 1e11]
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(manifest))
    ssa = ["apply", "--server-side", "--field-manager=gitops", "-f", str(path)]
    cluster.kubectl(*ssa)
    rng = random.Random(20261130)
    log = tmp_path / "operator.log"
    operator = Operator(installed, log)
    kills, preempted, edited = 0, None, False
    next_kill = time.monotonic() + rng.uniform(0.5, 2.0)
    deadline = time.monotonic() + 420
    results: dict[str, float] = {}
    try:
        while sweep(cluster, "chaos").get("status", {}).get("phase") != "Succeeded":
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            if kills < 20 and time.monotonic() > next_kill:
                operator.proc.kill()  # no shutdown, no cleanup: a crash or an evicted pod
                operator.proc.wait()
                kills += 1
                operator = Operator(installed, log)
                next_kill = time.monotonic() + rng.uniform(0.5, 2.0)
            for pod in running_trial_pods(cluster, "chaos"):
                tid = pod["metadata"]["labels"]["isoflop.dev/trial"]
                if preempted is None:  # the first trial to run is preempted once
                    cluster.exit_pod(
                        "default", pod["metadata"]["name"], 143, {"status": "preempted"}
                    )
                    preempted = tid
                    continue
                trial = next(t for t in plan(api.parse_sweep(manifest).spec).trials if t.id == tid)
                results[tid] = loss_of(trial.budget, trial.params)
                cluster.exit_pod(
                    "default",
                    pod["metadata"]["name"],
                    0,
                    {"status": "succeeded", "eval_loss": results[tid]},
                )
            # GitOps: the edited manifest, applied server-side once this test has ended 3 of
            # the 7 trials' pods (not when the status says so: under 20 kills the status can lag
            # until the sweep is all but done, and the edit would come too late, as CI once saw)
            if not edited and len(results) >= 3:
                manifest["spec"]["budgets"] = [3e10, 1e11, 3e11]
                path.write_text(yaml.safe_dump(manifest))
                cluster.kubectl(*ssa)
                edited = True
            time.sleep(0.2)
        status = sweep(cluster, "chaos")["status"]
        jobs = json.loads(
            cluster.kubectl(
                "get", "jobs", "-n", "default", "-l", "isoflop.dev/sweep=chaos", "-o", "json"
            ).stdout
        )["items"]
        saved = trial_records(cluster, "chaos")
    finally:
        cluster.kubectl(
            "delete", "scalingsweep", "chaos", "-n", "default", "--wait=false", check=False
        )
        time.sleep(2)  # the live operator removes its finalizer
        operator.stop()
    assert kills == 20
    assert edited
    trials = {t.id: t for t in plan(api.parse_sweep(manifest).spec).trials}
    assert len(trials) == 11  # the added budget's trials were planned and run
    records = {r["id"]: r for r in saved if r["phase"] == "Succeeded"}
    assert set(records) == set(trials), (saved, preempted, jobs)
    for tid, record in records.items():  # every result is the one its pod reported
        assert record["loss"] == pytest.approx(results[tid], rel=1e-12)
        assert record["attempts"] == 1  # the preemption did not count as a failure
    assert preempted in records
    # one Job per trial, each created once: kills never made a second, and never lost one
    assert sorted(j["metadata"]["labels"]["isoflop.dev/trial"] for j in jobs) == sorted(trials)
    preempted_job = next(
        j for j in jobs if j["metadata"]["labels"]["isoflop.dev/trial"] == preempted
    )
    assert preempted_job["status"].get("failed", 0) == 0  # podFailurePolicy: Ignore for 143
    assert abs(status["fit"]["laws"]["params"]["exponent"] - 0.5) < 0.05


def test_the_api_server_and_isoflop_validate_refuse_too_few_resamples_alike(
    cluster: Cluster, installed: Path, tmp_path: Path
) -> None:
    """A rule of the fit (0 or 100+ resamples) is a CEL rule of the CRD too: before, the server
    stored such a sweep and the operator then marked it InvalidSpec."""
    manifest = small_sweep("few")
    manifest["spec"]["fit"]["bootstrap"] = 50
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(manifest))
    server = cluster.kubectl("apply", "--dry-run=server", "-f", str(path), check=False)
    assert server.returncode != 0
    assert "spec.fit.bootstrap" in server.stderr
    assert "use 0 or 100+" in server.stderr
    local = subprocess.run(
        [sys.executable, "-m", "isoflop.cli", "validate", "--no-data", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert local.returncode == 2
    assert "spec.fit.bootstrap" in local.stderr
    manifest["spec"]["fit"]["bootstrap"] = 100
    path.write_text(yaml.safe_dump(manifest))
    cluster.kubectl("apply", "--dry-run=server", "-f", str(path))


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"strategy": {"wsdBranches": {}}}, "strategy.wsdBranches trains them all"),
        ({"training": {"learningRateScaling": "width"}}, "learningRateScaling must be none"),
        (
            {"training": {"microBatchSize": 8}, "tuning": {"globalBatchSizes": [8, 12, 16]}},
            "globalBatchSizes entry must be a multiple of",
        ),
    ],
)
def test_the_api_server_and_isoflop_validate_refuse_the_tuning_stages_contradictions(
    cluster: Cluster, installed: Path, tmp_path: Path, change: dict[str, Any], said: str
) -> None:
    """spec.tuning's cross-field rules are CEL rules of the CRD too, with the same sentence
    (validate names the fields from spec.)."""
    manifest = small_sweep("tuned")
    manifest["spec"]["tuning"] = {}
    for key, value in change.items():
        manifest["spec"][key] = {**manifest["spec"].get(key, {}), **value}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(manifest))
    server = cluster.kubectl("apply", "--dry-run=server", "-f", str(path), check=False)
    assert server.returncode != 0
    assert said in server.stderr
    local = subprocess.run(
        [sys.executable, "-m", "isoflop.cli", "validate", "--no-data", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert local.returncode == 2
    assert said in local.stderr
    manifest["spec"] = small_sweep("tuned")["spec"] | {"tuning": {}}  # the stage alone: stored
    path.write_text(yaml.safe_dump(manifest))
    cluster.kubectl("apply", "--dry-run=server", "-f", str(path))


def test_packed_trials_share_a_gpu_as_the_sharing_plugins_replicas_allow(
    cluster: Cluster, installed: Path, tmp_path: Path
) -> None:
    """spec.resources.packing on a real scheduler: a node whose one GPU a sharing plugin
    advertises as 4 replicas of nvidia.com/gpu.shared; the tiny rungs pack 4 to a GPU (1 replica
    each), so parallelism 2 would allow 8 at once, but the scheduler binds at most 4 there, and
    every packed trial runs on that node and finishes."""
    cluster.add_gpu_node("shared-0", gpus=0, extra={"nvidia.com/gpu.shared": "4"})
    manifest = small_sweep("packed")
    manifest["spec"]["parallelism"] = 2
    manifest["spec"]["resources"] = {
        "packing": {
            "maxTrialsPerGpu": 4,
            "sharedGpuResource": "nvidia.com/gpu.shared",
            "replicasPerGpu": 4,
        }
    }
    trials = {t.id: t for t in plan(api.parse_sweep(manifest).spec).trials}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(manifest))
    operator = Operator(installed, tmp_path / "operator.log")
    most = 0

    def pods(phase: str) -> list[dict[str, Any]]:
        out = cluster.kubectl(
            "get", "pods", "-n", "default", "-l", "isoflop.dev/sweep=packed", "-o", "json"
        )
        return [p for p in json.loads(out.stdout)["items"] if p["status"].get("phase") == phase]

    try:
        cluster.kubectl("apply", "-f", str(path))
        # the engine launches 8 (2 slots of 4 quarters); the node takes 4, the rest wait
        cluster.wait_for(
            lambda: len(running_trial_pods(cluster, "packed")) == 4 and len(pods("Pending")) == 4,
            120,
            "4 packed trials running and 4 waiting for a replica: "
            + (tmp_path / "operator.log").read_text()[-2000:],
        )
        deadline = time.monotonic() + 300
        while sweep(cluster, "packed").get("status", {}).get("phase") != "Succeeded":
            assert time.monotonic() < deadline, (tmp_path / "operator.log").read_text()[-3000:]
            running = running_trial_pods(cluster, "packed")
            most = max(most, len(running))
            assert len(running) <= 4  # the node's four replicas
            for pod in running:
                assert pod["spec"]["nodeName"] == "shared-0"
                (c,) = pod["spec"]["containers"]
                assert c["resources"]["limits"]["nvidia.com/gpu.shared"] == "1"
                trial = trials[pod["metadata"]["labels"]["isoflop.dev/trial"]]
                result = {"status": "succeeded", "eval_loss": loss_of(trial.budget, trial.params)}
                cluster.exit_pod("default", pod["metadata"]["name"], 0, result)
            time.sleep(0.3)
        assert most == 4
        done = [t for t in trial_records(cluster, "packed") if t["phase"] == "Succeeded"]
        assert len(done) == len(trials)
    finally:  # while the operator runs: it removes its finalizer
        cluster.kubectl("delete", "scalingsweep", "packed", "-n", "default", check=False)
        operator.stop()
        cluster.kubectl("delete", "node", "shared-0", check=False)


def test_a_confirmation_trains_once_after_the_final_fit_through_operator_kills(
    cluster: Cluster, installed: Path, tmp_path: Path
) -> None:
    """spec.confirm on the real control plane: the prediction is in the status (phase
    Confirming) before the confirmation's Job exists and after every grid trial finished; the
    operator is killed (SIGKILL) 5 times while the confirmation trains; its Job is created once,
    the prediction never changes, and the loss its pod reports gets the verdict."""
    from isoflop.sweep.confirm import trial_of

    manifest = small_sweep("confirm")
    manifest["spec"].update({"parallelism": 3, "budgets": [3e10, 1e11, 3e11], "confirm": [1.2e12]})
    spec = api.parse_sweep(manifest).spec
    trials = {t.id: t for t in plan(spec).trials}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(manifest))
    cluster.kubectl("apply", "-f", str(path))
    log = tmp_path / "operator.log"
    operator = Operator(installed, log)
    rng = random.Random(20261202)
    kills, predicted, measured = 0, None, None
    seen_confirming = False
    deadline = time.monotonic() + 420
    try:
        while sweep(cluster, "confirm").get("status", {}).get("phase") != "Succeeded":
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            status = sweep(cluster, "confirm").get("status", {})
            if status.get("confirmations"):
                seen_confirming |= status.get("phase") == "Confirming"
                now = status["confirmations"][0]["predictedLoss"]
                assert predicted in (None, now)  # written once, never recomputed differently
                predicted = now
            for pod in running_trial_pods(cluster, "confirm"):
                tid = pod["metadata"]["labels"]["isoflop.dev/trial"]
                trial = trials.get(tid)
                if trial is None:  # the confirmation
                    # every grid trial had finished, and the prediction was stored, before
                    done = [
                        r for r in trial_records(cluster, "confirm") if r["phase"] == "Succeeded"
                    ]
                    assert len(done) == len(trials)
                    assert predicted is not None
                    if kills < 5:  # the operator killed while the confirmation trains
                        operator.proc.kill()
                        operator.proc.wait()
                        kills += 1
                        time.sleep(rng.uniform(0.2, 1.0))
                        operator = Operator(installed, log)
                        continue
                    trial = trial_of(
                        spec, api.Confirmation.model_validate(status["confirmations"][0])
                    )
                    measured = loss_of(trial.budget, trial.params)
                loss = loss_of(trial.budget, trial.params)
                cluster.exit_pod(
                    "default",
                    pod["metadata"]["name"],
                    0,
                    {"status": "succeeded", "eval_loss": loss},
                )
            time.sleep(0.2)
        status = sweep(cluster, "confirm")["status"]
        jobs = json.loads(
            cluster.kubectl(
                "get", "jobs", "-n", "default", "-l", "isoflop.dev/sweep=confirm", "-o", "json"
            ).stdout
        )["items"]
        listed = cluster.kubectl("get", "scalingsweeps", "-n", "default").stdout
    finally:
        cluster.kubectl(
            "delete", "scalingsweep", "confirm", "-n", "default", "--wait=false", check=False
        )
        time.sleep(2)
        operator.stop()
    assert kills == 5
    assert seen_confirming
    (got,) = status["confirmations"]
    assert got["predictedLoss"] == predicted
    assert got["measuredLoss"] == pytest.approx(measured, rel=1e-12)
    assert got["attempts"] == 1
    assert got["message"].startswith(f"measured {measured:.4f}, predicted {predicted:.4f}")
    confirmed = next(c for c in status["conditions"] if c["type"] == "Confirmed")
    assert confirmed["status"] == ("True" if got["inside"] else "False")
    names = sorted(j["metadata"]["labels"]["isoflop.dev/trial"] for j in jobs)
    assert names == sorted([*trials, "confirm-1p2e12"])  # one Job each, the confirmation's once
    assert "confirm" in listed


def test_the_local_clusters_quickstart_is_one_the_server_and_validate_take_as_printed(
    cluster: Cluster, installed: Path, tmp_path: Path
) -> None:
    """`make local-cluster` prints `kubectl apply -f .../quickstart.yaml`: the quickstart with
    resources its one node has (no GPU, a CPU share), where the plain quickstart asks 8 CPUs,
    64Gi and a GPU that no such node has."""
    from tests.e2e.up import write_quickstart

    path = write_quickstart(tmp_path / "quickstart.yaml", "localhost/isoflop-trainer:dev")
    sweep = api.load_sweep(path)
    assert sweep.spec.resources.gpus_per_node == 0
    assert sweep.spec.resources.cpu == "900m"
    plain = api.load_sweep(Path(__file__).resolve().parents[2] / "examples" / "quickstart.yaml")
    assert sweep.spec.model == plain.spec.model
    assert sweep.spec.budgets == plain.spec.budgets
    out = cluster.kubectl("apply", "--dry-run=server", "-n", "default", "-f", str(path))
    assert "created (server dry run)" in out.stdout


def test_a_sweep_no_node_can_take_says_why_and_spends_no_failures(
    cluster: Cluster, installed: Path, tmp_path: Path
) -> None:
    """Trials asking more CPU than any node has: the real scheduler leaves their pods Pending,
    and the sweep says so within a reconcile, in the scheduler's words; none counts as running
    and none as failed."""
    manifest = small_sweep("huge")
    manifest["spec"]["resources"] = {"cpu": "5000", "memory": "1Gi", "gpusPerNode": 0}
    operator = Operator(installed, tmp_path / "operator.log")
    log = (tmp_path / "operator.log").read_text
    try:
        cluster.kubectl("create", "-f", "-", stdin=json.dumps(manifest))

        def ready() -> str:
            conditions = sweep(cluster, "huge").get("status", {}).get("conditions") or []
            return next((c["message"] for c in conditions if c["type"] == "Ready"), "")

        cluster.wait_for(lambda: "cannot be scheduled" in ready(), 90, "the reason: " + log())
        assert "Insufficient cpu" in ready(), ready()
        counts = sweep(cluster, "huge")["status"]["counts"]
        assert counts["running"] == 0, counts
        assert counts["starting"] == manifest["spec"]["parallelism"], counts
        assert counts["failed"] == 0, counts
        events = cluster.kubectl(
            "get", "events", "-n", "default", "--field-selector",
            "reason=TrialUnschedulable,involvedObject.name=huge", "-o", "json",
        ).stdout  # fmt: skip
        assert json.loads(events)["items"], "no TrialUnschedulable event"
    finally:
        cluster.kubectl("delete", "scalingsweep", "huge", check=False)
        operator.stop()


def test_two_operators_never_reconcile_one_sweep_at_once(
    cluster: Cluster, installed: Path, tmp_path: Path
) -> None:
    """A deleted operator pod stays Terminating (up to 30 s) while its replacement starts.
    Standalone, both reconcile the same sweep; peered (the chart's default, its peering object
    installed with it), the one of lower priority pauses until the other has gone, then takes
    over in the same second. Both run with the chart's rights."""
    manifest = small_sweep("peered")
    manifest["spec"]["parallelism"] = 1
    cluster.kubectl("create", "-f", "-", stdin=json.dumps(manifest))

    def reconciles(log: Path) -> int:
        return log.read_text().count("[default/peered] Timer 'reconcile' succeeded")

    logs = {n: tmp_path / f"{n}.log" for n in ("a", "b", "old", "new")}
    running: list[Operator] = []
    try:
        # standalone: two operators, two reconcilers of one sweep
        both = [Operator(installed, logs[n]) for n in ("a", "b")]
        running += both
        cluster.wait_for(lambda: all(reconciles(logs[n]) >= 2 for n in ("a", "b")), 60, "both")
        for op in both:
            op.stop()
        peer = {"ISOFLOP_PEERING": "isoflop"}
        old = Operator(installed, logs["old"], peer | {"ISOFLOP_PEERING_PRIORITY": "200"})
        running.append(old)
        cluster.wait_for(lambda: reconciles(logs["old"]) >= 2, 60, logs["old"].read_text())
        new = Operator(installed, logs["new"], peer | {"ISOFLOP_PEERING_PRIORITY": "100"})
        running.append(new)
        cluster.wait_for(
            lambda: "Pausing operations in favour of" in logs["new"].read_text(), 60,
            "the replacement's pause: " + logs["new"].read_text()[-2000:],
        )  # fmt: skip
        time.sleep(3)  # the old one reconciles on; the new one does not
        assert reconciles(logs["new"]) == 0, logs["new"].read_text()[-2000:]
        assert new.proc.poll() is None
        before = reconciles(logs["old"])
        time.sleep(2)
        assert reconciles(logs["old"]) > before
        old.stop()  # SIGTERM, as a deleted pod gets: it leaves the peering on its way out
        cluster.wait_for(lambda: reconciles(logs["new"]) >= 1, 30, logs["new"].read_text())
        assert "Resuming operations after the pause" in logs["new"].read_text()
        jobs = cluster.kubectl(
            "get", "jobs", "-n", "default", "-l", "isoflop.dev/sweep=peered", "-o", "name"
        ).stdout.split()
        assert len(jobs) == 1  # parallelism 1, each Job once
    finally:
        # deleted while an operator runs: its deletion handler lets the sweep go
        cluster.kubectl("delete", "scalingsweep", "peered", "--timeout=30s", check=False)
        for op in running:
            if op.proc.poll() is None:
                op.stop()
