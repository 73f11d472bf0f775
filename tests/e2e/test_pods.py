"""Trials in real pods: the operator image running as the chart's Deployment on a real kubelet,
its webhook served through the chart's Service, and a sweep applied with kubectl trained by the
trainer image, every trial in a pod of its own (tests/e2e/node.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from isoflop import api
from isoflop.sweep.plan import plan
from tests.e2e.cluster import NODE_HOST_IP, Cluster, free_port, trial_records
from tests.e2e.conftest import HELM, TRIALS_NAMESPACE
from tests.e2e.node import NODE, Node
from tests.mlflow_server import MlflowServer, assert_sweep_tracked, experiment_runs

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


@pytest.fixture(scope="module")
def node_mlflow(node: Node, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow server where the node's pods (the trials, the operator's) reach it."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"), host=NODE_HOST_IP).start()
    try:
        yield server.url
    finally:
        server.stop()


def runs_by_kind(url: str, experiment: str) -> dict[str, list[Any]]:
    by_kind: dict[str, list[Any]] = {}
    for r in experiment_runs(url, experiment)[1]:
        by_kind.setdefault(r.data.tags["isoflop.kind"], []).append(r)
    return by_kind


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
    # the trials' namespace enforces the restricted Pod Security Standard: a pod that may run as
    # root is refused there (the trial pods of the other tests are admitted)
    loose = cluster.kubectl(
        "run", "loose", "-n", TRIALS_NAMESPACE, f"--image={images['trainer'][0]}",
        "--restart=Never", "--dry-run=server", check=False,
    )  # fmt: skip
    assert loose.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in loose.stderr
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


def apply_until_done(
    cluster: Cluster, deployed: dict[str, str], manifest: dict[str, Any], path: Path
) -> tuple[dict[str, Any], dict[str, dict[str, Any]], list[dict[str, Any]], float]:
    """`kubectl apply` the sweep (written to `path`), wait until it ends, and read its status,
    trial records and pods before deleting it; with the seconds it took."""
    name = manifest["metadata"]["name"]
    path.write_text(yaml.safe_dump(manifest))
    started = time.monotonic()
    cluster.kubectl("apply", "-f", str(path))
    try:
        deadline = time.monotonic() + 900
        while get(cluster, "scalingsweep", name, TRIALS_NAMESPACE).get("status", {}).get(
            "phase"
        ) not in ("Succeeded", "Failed"):
            assert time.monotonic() < deadline, operator_log(cluster, deployed)
            time.sleep(2)
        wall = time.monotonic() - started
        status = get(cluster, "scalingsweep", name, TRIALS_NAMESPACE)["status"]
        records = {r["id"]: r for r in trial_records(cluster, name, TRIALS_NAMESPACE)}
        pods = json.loads(
            cluster.kubectl(
                "get", "pods", "-n", TRIALS_NAMESPACE, "-l", f"isoflop.dev/sweep={name}", "-o",
                "json",
            ).stdout
        )["items"]  # fmt: skip
    finally:
        cluster.kubectl("delete", "scalingsweep", name, "-n", TRIALS_NAMESPACE, check=False)
    return status, records, pods, wall


def test_a_sweep_applied_with_kubectl_trains_every_trial_in_a_real_pod(
    cluster: Cluster,
    node: Node,
    deployed: dict[str, str],
    images: dict[str, Any],
    tmp_path: Path,
    node_mlflow: str,
) -> None:
    """Each trial logs its MLflow run from its pod, the operator its budgets' and the fit's."""
    manifest = pod_sweep("pods", images["trainer"][0])
    manifest["spec"]["tracking"] = {"mlflow": {"trackingUri": node_mlflow}}
    trials = {t.id: t for t in plan(api.parse_sweep(manifest).spec).trials}
    path = tmp_path / "sweep.yaml"
    status, records, pods, wall = apply_until_done(cluster, deployed, manifest, path)
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
    # MLflow: one run per trial, logged from its pod, equal to its record, under its budget's run
    runs = runs_by_kind(node_mlflow, f"isoflop/{TRIALS_NAMESPACE}/pods")
    budgets = {r.data.tags["isoflop.budget"]: r.info.run_id for r in runs["budget"]}
    trial_runs = {r.info.run_name: r for r in runs["trial"]}
    assert sorted(trial_runs) == sorted(trials)
    for tid, run in trial_runs.items():
        assert run.info.status == "FINISHED"
        assert run.data.metrics["eval_loss"] == records[tid]["loss"]
        assert run.data.metrics["step"] == trials[tid].steps
        assert run.data.params["N"] == str(trials[tid].params)
        assert run.data.tags["isoflop.namespace"] == TRIALS_NAMESPACE
        assert run.data.tags["mlflow.parentRunId"] == budgets[f"{trials[tid].budget:g}"]
    (fit,) = runs["fit"]
    assert fit.data.metrics["params_exponent"] == status["fit"]["laws"]["params"]["exponent"]
    assert status["tracking"]["fitRunId"] == fit.info.run_id
    assert status["tracking"]["notLogged"] == []
    # the same sweep run locally logs its own experiment, equal to its trials.csv
    assert_sweep_tracked(node_mlflow, local, "isoflop/pods")
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


def test_a_deleted_trial_pod_resumes_from_s3_and_a_deleted_operator_pod_loses_nothing(
    cluster: Cluster,
    node: Node,
    deployed: dict[str, str],
    images: dict[str, Any],
    tmp_path: Path,
    node_mlflow: str,
) -> None:
    """Checkpoints in S3 (moto, where pods reach it) through the Secret's credentials; results
    from a real Prometheus scraping the trial pods that the chart's PodMonitor selects. Mid-sweep
    the longest trial's pod is deleted (SIGTERM: it saves a checkpoint and exits 143), then the
    operator's own pod: the trial resumes in a new pod of the same Job, no retry is counted, and
    every trial has one Job and one result, and one MLflow run: the resumed pod continues its
    first pod's run, the restarted operator its budgets' and fit's."""
    import boto3
    from moto.server import ThreadedMotoServer

    from tests.monitoring.conftest import start_prometheus

    s3 = ThreadedMotoServer(ip_address=NODE_HOST_IP, port=free_port(), verbose=False)
    s3.start()
    endpoint = f"http://{NODE_HOST_IP}:{s3._port}"
    credentials = {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
    }
    client = boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id="test", aws_secret_access_key="test",
    )  # fmt: skip
    client.create_bucket(Bucket="ckpt")
    cluster.kubectl(
        "create", "secret", "generic", "s3", "-n", TRIALS_NAMESPACE,
        *(f"--from-literal={k}={v}" for k, v in credentials.items()),
    )  # fmt: skip
    targets = tmp_path / "targets.json"
    targets.write_text("[]")
    prom = start_prometheus(
        tmp_path / "prometheus",
        free_port(),
        [
            {
                "job_name": "isoflop-trials",
                "scrape_interval": "1s",
                "file_sd_configs": [{"files": [str(targets)]}],
            }
        ],
        [],
        host=NODE_HOST_IP,
    )
    discovery = PodMonitorDiscovery(cluster, TRIALS_NAMESPACE, targets)
    manifest = pod_sweep("resume", images["trainer"][0])
    manifest["spec"]["resources"]["s3CredentialsSecret"] = "s3"
    manifest["spec"]["storage"]["checkpoints"] = "s3://ckpt/sweeps"
    manifest["spec"]["metrics"] = {"prometheusUrl": prom.url, "lookback": "30m"}
    manifest["spec"]["tracking"] = {"mlflow": {"trackingUri": node_mlflow}}
    trials = {t.id for t in plan(api.parse_sweep(manifest).spec).trials}
    longest = "1e11-d01"  # 2,651 steps: long enough to stop half way
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(manifest))

    def jobs() -> dict[str, dict[str, Any]]:
        out = cluster.kubectl(
            "get", "jobs", "-n", TRIALS_NAMESPACE, "-l", "isoflop.dev/sweep=resume", "-o", "json"
        )
        return {
            j["metadata"]["labels"]["isoflop.dev/trial"]: j for j in json.loads(out.stdout)["items"]
        }

    def pods_of(trial: str) -> list[dict[str, Any]]:
        out = cluster.kubectl(
            "get", "pods", "-n", TRIALS_NAMESPACE, "-o", "json",
            "-l", f"isoflop.dev/sweep=resume,isoflop.dev/trial={trial}",
        )  # fmt: skip
        return json.loads(out.stdout)["items"]  # type: ignore[no-any-return]

    cluster.kubectl("apply", "-f", str(path))
    try:
        # the longest trial, half way: Prometheus has scraped its pod's step counter
        selector = f'namespace="{TRIALS_NAMESPACE}",sweep="resume",trial="{longest}"'
        prom.wait_for(f"isoflop_step{{{selector}}} > 300", timeout=600)
        job_uid = jobs()[longest]["metadata"]["uid"]
        (first,) = pods_of(longest)
        cluster.kubectl("delete", "pod", "-n", TRIALS_NAMESPACE, first["metadata"]["name"])
        cluster.kubectl(
            "delete", "pod", "-n", deployed["namespace"], "-l",
            "app.kubernetes.io/name=isoflop-operator",
        )  # fmt: skip
        deadline = time.monotonic() + 900
        while get(cluster, "scalingsweep", "resume", TRIALS_NAMESPACE).get("status", {}).get(
            "phase"
        ) not in ("Succeeded", "Failed"):
            assert time.monotonic() < deadline, operator_log(cluster, deployed)
            time.sleep(2)
        status = get(cluster, "scalingsweep", "resume", TRIALS_NAMESPACE)["status"]
        records = {r["id"]: r for r in trial_records(cluster, "resume", TRIALS_NAMESPACE)}
        final_jobs = jobs()
        pods = pods_of(longest)
        logs = [
            cluster.kubectl("logs", "-n", TRIALS_NAMESPACE, p["metadata"]["name"]).stdout
            for p in pods
            if p["metadata"]["name"] != first["metadata"]["name"]
        ]
        saved = client.list_objects_v2(Bucket="ckpt", Prefix=f"sweeps/resume/{longest}/")
    finally:
        discovery.stop()
        cluster.kubectl("delete", "scalingsweep", "resume", "-n", TRIALS_NAMESPACE, check=False)
        cluster.kubectl("delete", "secret", "s3", "-n", TRIALS_NAMESPACE, check=False)
        prom.process.terminate()
        prom.process.wait(10)
        s3.stop()
    assert status["phase"] == "Succeeded", (status, operator_log(cluster, deployed))
    assert set(records) == trials
    assert {r["phase"] for r in records.values()} == {"Succeeded"}
    assert {r["source"] for r in records.values()} == {"prometheus"}
    # one Job per trial, the stopped trial's the same one; no retry counted against it
    assert set(final_jobs) == trials
    assert final_jobs[longest]["metadata"]["uid"] == job_uid
    assert records[longest].get("attempts", 1) == 1
    # the Job saw the preempted pod fail (exit 143), and its podFailurePolicy ignored it
    assert final_jobs[longest]["status"].get("failed") == 1
    assert final_jobs[longest]["status"]["succeeded"] == 1
    # its second pod started from the checkpoint the first one left in S3
    (log,) = logs
    assert f"trial {longest} resumed from step" in log, log[-2000:]
    assert saved.get("KeyCount", 0) > 0
    # one run per trial, per budget and for the fit, though a pod and the operator restarted
    runs = runs_by_kind(node_mlflow, f"isoflop/{TRIALS_NAMESPACE}/resume")
    assert sorted(r.info.run_name for r in runs["trial"]) == sorted(trials)
    assert len(runs["budget"]) == 2
    assert len(runs["fit"]) == 1
    (resumed,) = [r for r in runs["trial"] if r.info.run_name == longest]
    assert resumed.info.status == "FINISHED"
    from mlflow.tracking import MlflowClient

    steps = [m.step for m in MlflowClient(node_mlflow).get_metric_history(
        resumed.info.run_id, "train_loss")]  # fmt: skip
    assert steps[0] < 300 < steps[-1]  # both pods' losses, in the one run
    assert status["tracking"]["notLogged"] == []


def test_a_two_node_trial_rendezvouses_over_its_headless_service_and_trains_like_two_processes(
    cluster: Cluster, node: Node, deployed: dict[str, str], images: dict[str, Any], tmp_path: Path
) -> None:
    """`nodes: 2`: an Indexed Job of two pods whose torchrun agents meet at rank 0's DNS name
    under the headless Service (CoreDNS), gloo on CPU. The first trial's loss equals the same
    training command's run as two local processes on this machine."""
    manifest = pod_sweep("multi", images["trainer"][0])
    manifest["spec"]["parallelism"] = 1
    manifest["spec"]["resources"]["nodes"] = 2
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(manifest))
    first = plan(api.parse_sweep(manifest).spec).trials[0].id
    cluster.kubectl("apply", "-f", str(path))
    try:

        def done() -> dict[str, Any] | None:
            records = {r["id"]: r for r in trial_records(cluster, "multi", TRIALS_NAMESPACE)}
            return records.get(first)

        deadline = time.monotonic() + 600
        while (record := done()) is None:
            assert time.monotonic() < deadline, operator_log(cluster, deployed)
            time.sleep(2)
        job = json.loads(
            cluster.kubectl(
                "get", "jobs", "-n", TRIALS_NAMESPACE, "-o", "json",
                "-l", f"isoflop.dev/sweep=multi,isoflop.dev/trial={first}",
            ).stdout
        )["items"][0]  # fmt: skip
        pods = json.loads(
            cluster.kubectl(
                "get", "pods", "-n", TRIALS_NAMESPACE, "-o", "json",
                "-l", f"job-name={job['metadata']['name']}",
            ).stdout
        )["items"]  # fmt: skip
        logs = [
            cluster.kubectl("logs", "-n", TRIALS_NAMESPACE, p["metadata"]["name"]).stdout
            for p in pods
        ]
    finally:
        cluster.kubectl("delete", "scalingsweep", "multi", "-n", TRIALS_NAMESPACE, check=False)
    assert record["phase"] == "Succeeded", (record, logs)
    assert job["spec"]["completionMode"] == "Indexed"
    indexes = sorted(
        p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] for p in pods
    )
    assert indexes == ["0", "1"]
    for p in pods:
        (state,) = p["status"]["containerStatuses"]
        assert state["state"]["terminated"]["exitCode"] == 0
    # the same command, two processes on this machine: one rank each, as the two pods had
    (container,) = job["spec"]["template"]["spec"]["containers"]
    config = json.loads(container["args"][container["args"].index("--config-json") + 1])
    config |= {
        "results": str(tmp_path / "result.json"),
        "checkpoint": str(tmp_path / "checkpoint"),
        "termination_log": None,
        "metrics_port": None,
        "metrics_linger_seconds": 0.0,
        "compile_cache": None,
    }
    local = subprocess.run(
        [sys.executable, "-m", "isoflop_trainer.launch", "--nnodes", "1", "--nproc-per-node",
         "2", "--standalone", "-m", "isoflop_trainer.cli", "train", "--config-json",
         json.dumps(config)],
        capture_output=True, text=True, timeout=600, check=False,
        env={**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"},
    )  # fmt: skip
    assert local.returncode == 0, local.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert record["loss"] == result["eval_loss"]


class PodMonitorDiscovery:
    """The part of prometheus-operator a PodMonitor needs, for Debian's Prometheus (built without
    Kubernetes service discovery): the pods the chart's own PodMonitor selects (its selector and
    port, rendered by helm), written as file_sd targets labelled with their namespace and pod,
    every half second while the test runs."""

    def __init__(self, cluster: Cluster, namespace: str, path: Path) -> None:
        import threading

        monitor = yaml.safe_load(
            subprocess.run(
                [str(HELM), "template", "isoflop", str(ROOT / "helm" / "isoflop"),
                 "--set", "podMonitor.enabled=true", "--show-only", "templates/podmonitor.yaml"],
                capture_output=True, text=True, timeout=60, check=True,
            ).stdout
        )  # fmt: skip
        selector = monitor["spec"]["selector"]
        terms = [f"{k}={v}" for k, v in selector["matchLabels"].items()]
        terms += [e["key"] for e in selector["matchExpressions"] if e["operator"] == "Exists"]
        self.selector = ",".join(terms)
        self.port = monitor["spec"]["podMetricsEndpoints"][0]["port"]
        self.cluster, self.namespace, self.path = cluster, namespace, path
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.wait(0.5):
            out = self.cluster.kubectl(
                "get", "pods", "-n", self.namespace, "-l", self.selector, "-o", "json",
                check=False,
            )  # fmt: skip
            if out.returncode != 0:
                continue
            groups = []
            for pod in json.loads(out.stdout)["items"]:
                ip = pod["status"].get("podIP")
                ports = [
                    p["containerPort"]
                    for c in pod["spec"]["containers"]
                    for p in c.get("ports", [])
                    if p.get("name") == self.port
                ]
                if ip and ports and pod["status"].get("phase") == "Running":
                    labels = {"namespace": self.namespace, "pod": pod["metadata"]["name"]}
                    groups.append({"targets": [f"{ip}:{ports[0]}"], "labels": labels})
            part = self.path.with_suffix(".part")
            part.write_text(json.dumps(groups))
            part.replace(self.path)  # Prometheus never reads half a file

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(10)


def test_an_sd3_sweep_applied_with_kubectl_is_measured_by_its_model_check_pod_and_trains(
    cluster: Cluster, node: Node, deployed: dict[str, str], images: dict[str, Any], tmp_path: Path
) -> None:
    """diffusers' SD3 MMDiT as the sweep's family: the model check runs in a pod of the trainer
    image, the operator plans from its verdict, every trial trains SD3 in a pod, and the laws
    come with intervals. The ladder brackets each budget's optimum (examples/quickstart-sd3)."""
    manifest = pod_sweep("sd3", images["trainer"][0])
    quick = api.yaml_load((ROOT / "examples" / "quickstart-sd3.yaml").read_text())["spec"]
    keep = {"d2w40", "d2w48", "d2w64", "d2w80", "d2w96"}
    model = {
        **quick["model"],
        "configs": [c for c in quick["model"]["configs"] if c["name"] in keep],
    }
    manifest["spec"].update(model=model, budgets=[3e10, 6e10], training=quick["training"])
    manifest["spec"]["training"]["evalSamples"] = 256
    status, records, pods, wall = apply_until_done(cluster, deployed, manifest, tmp_path / "s.yaml")
    check_pods = [
        p for p in pods if p["metadata"]["labels"].get("isoflop.dev/role") == "model-check"
    ]
    assert status["phase"] == "Succeeded", (status, operator_log(cluster, deployed))
    check = api.ModelCheckStatus.model_validate(status["modelCheck"])
    assert check.ready is True
    assert sorted(check.rungs) == sorted(keep)
    assert {p["spec"]["nodeName"] for p in check_pods} == {NODE}  # measured in a real pod
    assert len(records) == 10
    assert all(r["phase"] == "Succeeded" for r in records.values()), records
    for tid, r in records.items():  # each trial trained the model its rung's check measured
        assert r["params"] == check.rungs[tid.split("-", 1)[1]].params
    law = status["fit"]["laws"]["params"]
    assert law["exponentInterval"]["low"] < law["exponent"] < law["exponentInterval"]["high"]
    print(f"\nreal pods: SD3 sweep, model check and {len(records)} trials in {wall:.0f} s")
