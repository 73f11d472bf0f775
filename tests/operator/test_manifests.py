"""Child manifests: valid Kubernetes objects with the pod spec a GPU trial needs."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from isoflop import api
from isoflop.cluster.manifests import cluster_config, data_check_job, job_name, trial_objects
from isoflop.sweep.plan import plan
from isoflop.sweep.trials import train_config
from isoflop_trainer.config import TrainConfig

ROOT = Path(__file__).resolve().parents[2]


def paper(**resources: Any) -> api.ScalingSweep:
    sweep = api.load_sweep(ROOT / "examples" / "paper-in-context.yaml")
    wire = sweep.to_wire()
    wire["spec"]["resources"].update(resources)
    wire["spec"]["storage"] = {"checkpoints": "s3://bucket/ckpt"}
    return api.parse_sweep(wire)


def objects(sweep: api.ScalingSweep) -> list[dict[str, Any]]:
    trial = plan(sweep.spec).trials[0]
    cfg = train_config(sweep.spec, sweep.name, trial, **cluster_config(sweep, trial))
    return trial_objects(sweep, "uid-1", "ml", trial, cfg)


@pytest.mark.parametrize("version", ["1.27", "1.33"])
@pytest.mark.parametrize("nodes", [1, 4])
def test_objects_validate_strictly(version: str, nodes: int) -> None:
    for obj in objects(paper(nodes=nodes)):
        kubernetes_validate.validate(copy.deepcopy(obj), version, strict=True)


def test_a_tracked_trials_pod_gets_the_mlflow_secret_beside_the_s3_one() -> None:
    """The trainer's S3 and MLflow clients each read their own variables from the pod's
    environment: both Secrets, S3's first, each once."""
    sweep = paper()
    wire = sweep.to_wire()
    wire["spec"]["tracking"] = {
        "mlflow": {"trackingUri": "http://m:5000", "credentialsSecret": "mf"}
    }
    (job,) = objects(api.parse_sweep(wire))
    (c,) = job["spec"]["template"]["spec"]["containers"]
    assert c["envFrom"] == [{"secretRef": {"name": "isoflop-s3"}}, {"secretRef": {"name": "mf"}}]
    wire["spec"]["tracking"]["mlflow"]["credentialsSecret"] = "isoflop-s3"  # one Secret for both
    (job,) = objects(api.parse_sweep(wire))
    (c,) = job["spec"]["template"]["spec"]["containers"]
    assert c["envFrom"] == [{"secretRef": {"name": "isoflop-s3"}}]


def test_single_node_job_pod_spec() -> None:
    (job,) = objects(
        paper(
            priorityClassName="research", imagePullSecrets=["regcred"], serviceAccountName="trainer"
        )
    )
    meta, spec = job["metadata"], job["spec"]
    assert meta["name"] == "paper-in-context-1e17-d02"
    assert meta["labels"]["isoflop.dev/sweep"] == "paper-in-context"
    assert meta["labels"]["isoflop.dev/trial"] == "1e17-d02"
    assert meta["labels"]["isoflop.dev/budget"] == "1e17"
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "isoflop"
    (owner,) = meta["ownerReferences"]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("ScalingSweep", "uid-1", True)
    assert spec["backoffLimit"] == 2
    assert spec["podFailurePolicy"]["rules"][1]["onExitCodes"]["values"] == [143]
    pod = spec["template"]["spec"]
    (c,) = pod["containers"]
    assert c["command"] == ["isoflop-torchrun"]
    assert c["args"][:5] == ["--nnodes", "1", "--nproc-per-node", "8", "--standalone"]
    cfg = TrainConfig.from_dict(json.loads(c["args"][c["args"].index("--config-json") + 1]))
    assert cfg.checkpoint == "s3://bucket/ckpt/paper-in-context/1e17-d02"
    assert cfg.metrics_port == 9400
    assert cfg.termination_log == "/dev/termination-log"
    assert cfg.num_workers == 4  # the example's training.dataWorkers
    assert cfg.compile_cache == "s3://bucket/ckpt/paper-in-context/compile-cache"
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert c["resources"]["requests"] == {"cpu": "64", "memory": "512Gi"}
    assert c["envFrom"] == [{"secretRef": {"name": "isoflop-s3"}}]
    # 64 cores over 8 ranks: 8 threads each, not the image's default for every rank
    assert {"name": "OMP_NUM_THREADS", "value": "8"} in c["env"]
    assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert {"name": "metrics", "containerPort": 9400} in c["ports"]
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["volumes"] == [
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}}
    ]
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert pod["priorityClassName"] == "research"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["serviceAccountName"] == "trainer"
    assert pod["restartPolicy"] == "Never"
    assert spec["template"]["metadata"]["labels"]["isoflop.dev/trial"] == "1e17-d02"
    assert spec["activeDeadlineSeconds"] == 7 * 24 * 3600  # a hung trial ends
    assert spec["ttlSecondsAfterFinished"] == 24 * 3600  # its record outlives the Job
    assert pod["automountServiceAccountToken"] is False  # the trainer needs no API token


def test_packed_trials_request_a_share_of_a_shared_gpu_and_large_rungs_whole_gpus() -> None:
    sweep = paper(
        packing={"sharedGpuResource": "nvidia.com/gpu.shared", "replicasPerGpu": 8},
        gpusPerNode=8,
        nodes=2,
    )
    trials = [t for t in plan(sweep.spec).trials if t.budget == 1e18]
    jobs = {}
    for t in trials:
        cfg = train_config(sweep.spec, sweep.name, t, **cluster_config(sweep, t))
        jobs[t.rung] = (cfg, trial_objects(sweep, "uid-1", "ml", t, cfg))
    # d02: 8 to a GPU (4.65% MFU alone), one replica of 8 each; d05: 3, ceil(8/3) = 3 replicas
    # so at most 2 share a GPU (never more than 3); d06: 2, 4 replicas
    for rung, replicas, cpu, memory in (
        ("d02", "1", "8000m", str(512 * 2**30 // 8)),
        ("d05", "3", "21333m", str(512 * 2**30 // 3)),
        ("d06", "4", "32000m", str(512 * 2**30 // 2)),
    ):
        cfg, objs = jobs[rung]
        (job,) = objs  # one node: no Service, though the sweep's trials span 2
        assert "completions" not in job["spec"]
        (c,) = job["spec"]["template"]["spec"]["containers"]
        assert c["resources"]["limits"] == {
            "cpu": cpu,
            "memory": memory,
            "nvidia.com/gpu.shared": replicas,
        }
        assert c["resources"]["requests"] == {"cpu": cpu, "memory": memory}
        assert c["args"][:4] == ["--nnodes", "1", "--nproc-per-node", "1"]  # one process
        assert cfg.micro_batch_size is None  # 1024 fits its share of 80 GiB
        kubernetes_validate.validate(copy.deepcopy(job), "1.33", strict=True)
    # a large rung: its 8 GPUs on each of 2 nodes, as without packing
    cfg, objs = jobs["d15"]
    job, service = objs
    (c,) = job["spec"]["template"]["spec"]["containers"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert "nvidia.com/gpu.shared" not in c["resources"]["limits"]
    assert job["spec"]["completions"] == 2
    assert service["kind"] == "Service"


def test_deadline_and_ttl_come_from_the_spec_and_the_data_check_mounts_no_token() -> None:
    sweep = paper(maxRuntimeSeconds=3600, finishedTtlSeconds=60, serviceAccountName="trainer")
    (job,) = objects(sweep)
    assert job["spec"]["activeDeadlineSeconds"] == 3600
    assert job["spec"]["ttlSecondsAfterFinished"] == 60
    wire = sweep.to_wire()
    wire["spec"]["data"] = {**wire["spec"]["data"], "source": "s3://bucket/shards"}
    check = data_check_job(api.parse_sweep(wire), "uid-1", "ml")
    assert check["spec"]["ttlSecondsAfterFinished"] == 60
    assert check["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    assert check["spec"]["template"]["spec"]["serviceAccountName"] == "trainer"
    kubernetes_validate.validate(copy.deepcopy(check), "1.33", strict=True)


def test_a_trial_keeps_serving_its_final_metrics_only_when_prometheus_reads_them() -> None:
    scraped = paper()
    trial = plan(scraped.spec).trials[0]
    assert scraped.spec.metrics.prometheus_url is not None
    assert cluster_config(scraped, trial)["metrics_linger_seconds"] == 45  # a 15 s scrape sees it
    wire = scraped.to_wire()
    wire["spec"]["metrics"] = {}  # results from the termination message
    sweep = api.parse_sweep(wire)
    assert cluster_config(sweep, trial)["metrics_linger_seconds"] == 0  # its GPUs free at once
    # the operator's own Prometheus (ISOFLOP_PROMETHEUS_URL) reads it too
    assert cluster_config(sweep, trial, scraped=True)["metrics_linger_seconds"] == 45


def test_multi_node_trials_are_indexed_jobs_with_a_headless_service() -> None:
    job, service = objects(paper(nodes=4))
    name = job["metadata"]["name"]
    assert service["kind"] == "Service"
    assert service["metadata"]["name"] == name
    assert service["spec"]["clusterIP"] == "None"
    assert "ownerReferences" not in service["metadata"]  # the operator makes its Job its owner
    assert service["spec"]["selector"] == {
        "isoflop.dev/sweep": "paper-in-context",
        "isoflop.dev/trial": "1e17-d02",
    }
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 4, 4)
    pod = spec["template"]["spec"]
    assert pod["subdomain"] == name
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["PET_MASTER_ADDR"]["value"] == f"{name}-0.{name}.ml.svc"
    assert "job-completion-index" in env["PET_NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"]
    args = pod["containers"][0]["args"]
    assert args[:6] == ["--nnodes", "4", "--nproc-per-node", "8", "--master-port", "29500"]


def test_job_names_are_deterministic_and_short() -> None:
    assert job_name("s", "1e17-d02") == "s-1e17-d02"
    long = job_name("a-very-long-sweep-name-for-the-paper-grid-x", "1p5e21-explicit-rung")
    assert len(long) <= 52
    assert long == job_name("a-very-long-sweep-name-for-the-paper-grid-x", "1p5e21-explicit-rung")
    assert long != job_name("a-very-long-sweep-name-for-the-paper-grid-x", "1p5e21-explicit-rung2")


def test_a_queue_labels_every_job_of_the_sweep_and_creates_it_suspended_for_kueue() -> None:
    """spec.resources.queueName (else the installation's default queue) and the workload
    priority go on the trial Jobs and the data check Job as Kueue's labels, and the Jobs are
    created suspended: Kueue admits them, the operator never starts them itself."""
    queue, priority = "kueue.x-k8s.io/queue-name", "kueue.x-k8s.io/priority-class"
    (job,) = objects(paper(queueName="team-a", workloadPriorityClass="sweeps"))
    assert job["metadata"]["labels"][queue] == "team-a"
    assert job["metadata"]["labels"][priority] == "sweeps"
    assert job["spec"]["suspend"] is True
    assert queue not in job["spec"]["template"]["metadata"]["labels"]  # Kueue reads the Job's
    kubernetes_validate.validate(copy.deepcopy(job), "1.33", strict=True)
    # no queue anywhere: as before, whatever the priority says (Kueue ignores it without one)
    (plain,) = objects(paper(workloadPriorityClass="sweeps"))
    assert queue not in plain["metadata"]["labels"]
    assert priority not in plain["metadata"]["labels"]
    assert "suspend" not in plain["spec"]
    # the chart's default queue for sweeps that name none; a sweep's own queue wins
    sweep = paper()
    trial = plan(sweep.spec).trials[0]
    cfg = train_config(sweep.spec, sweep.name, trial, **cluster_config(sweep, trial))
    (defaulted,) = trial_objects(sweep, "uid-1", "ml", trial, cfg, "shared")
    assert defaulted["metadata"]["labels"][queue] == "shared"
    assert defaulted["spec"]["suspend"]
    own = paper(queueName="team-a")
    (mine,) = trial_objects(own, "uid-1", "ml", trial, cfg, "shared")
    assert mine["metadata"]["labels"][queue] == "team-a"
    wire = own.to_wire()
    wire["spec"]["data"] = {**wire["spec"]["data"], "source": "s3://bucket/shards"}
    check = data_check_job(api.parse_sweep(wire), "uid-1", "ml")
    assert check["metadata"]["labels"][queue] == "team-a"
    assert check["spec"]["suspend"] is True


def test_a_queue_name_must_be_a_label_value_kueue_can_match() -> None:
    with pytest.raises(ValueError, match="queueName"):
        paper(queueName="Team A")
    with pytest.raises(ValueError, match="workloadPriorityClass"):
        paper(workloadPriorityClass="x" * 64)
