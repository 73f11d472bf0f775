"""Pure builders of the child objects of a ScalingSweep: one Job per trial (Indexed Job plus a
headless Service when a trial spans nodes). No I/O and no Kubernetes client: dicts in, dicts out.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from kubernetes.utils import parse_quantity

from isoflop import api
from isoflop.sweep.packing import Packing
from isoflop.sweep.plan import Trial, budget_tag
from isoflop_trainer.component import MASTER_PORT, METRICS_PORT
from isoflop_trainer.component import trial as component
from isoflop_trainer.config import TrainConfig
from isoflop_trainer.data.store import PERMANENT_EXIT_CODE

MANAGED_BY = {"app.kubernetes.io/managed-by": "isoflop", "app.kubernetes.io/name": "isoflop-trial"}
SWEEP_LABEL, TRIAL_LABEL, BUDGET_LABEL = (
    "isoflop.dev/sweep",
    "isoflop.dev/trial",
    "isoflop.dev/budget",
)
PREEMPTED_EXIT_CODE = 143  # the trainer checkpointed on SIGTERM: retry without counting a failure
METRICS_LINGER_SECONDS = 45.0  # long enough for a 15 s scrape interval to see the final values
UID = 10001
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"  # set on Indexed Job pods


# the restricted pod security profile, for every pod the operator creates
CONTAINER_SECURITY: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
POD_SECURITY: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": UID,
    "runAsGroup": UID,
    "fsGroup": UID,
    "seccompProfile": {"type": "RuntimeDefault"},
}
# a permanent failure (the trainer's exit 65: data, config, a deterministic error): one failure
# says it, retries cannot mend it
FAIL_ON_PERMANENT_ERROR: dict[str, Any] = {
    "action": "FailJob",
    "onPodConditions": [],
    "onExitCodes": {"containerName": "trainer", "operator": "In", "values": [PERMANENT_EXIT_CODE]},
}
ROLE_LABEL = "isoflop.dev/role"
DATA_CHECK = "data-check"  # the role and the name suffix of a sweep's data check Job
MODEL_CHECK = "model-check"  # ... and of its model check Job (class families)
REQUEST_LABEL = "isoflop.dev/request"  # the model check's rungs, as a digest
# Kueue: a Job with the queue label waits, suspended, until its ClusterQueue admits it
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"
DEFAULT_QUEUE_ENV = "ISOFLOP_DEFAULT_QUEUE"  # the chart's queue.default: sweeps that name none


def job_name(sweep: str, trial_id: str) -> str:
    """Deterministic, DNS-safe, at most 52 characters (Indexed Job pods add '-N-xxxxx')."""
    name = f"{sweep}-{trial_id}"
    if len(name) <= 52:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[:43].rstrip('-')}-{digest}"


def labels(sweep: str, trial: Trial) -> dict[str, str]:
    return {
        **MANAGED_BY,
        SWEEP_LABEL: sweep,
        TRIAL_LABEL: trial.id,
        BUDGET_LABEL: budget_tag(trial.budget),
    }


def job_owner(name: str, uid: str) -> dict[str, Any]:
    """The ownerReference that makes a trial's headless Service go with its Job (cancelled,
    expired by its TTL, or collected with the sweep)."""
    return {"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid}


def owner_reference(sweep: api.ScalingSweep, uid: str) -> dict[str, Any]:
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "name": sweep.name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def queue_labels(res: api.ResourcesSpec, default_queue: str | None = None) -> dict[str, str]:
    """Kueue's labels for a Job of the sweep: its LocalQueue (the spec's, else the installation's
    default) and its WorkloadPriorityClass; none without a queue."""
    queue = res.queue_name or default_queue
    if not queue:
        return {}
    out = {QUEUE_LABEL: queue}
    if res.workload_priority_class:
        out[PRIORITY_LABEL] = res.workload_priority_class
    return out


def queued(job: dict[str, Any], labels_: dict[str, str]) -> dict[str, Any]:
    """A Job that goes through a queue is created suspended, as Kueue wants it (its webhook would
    suspend it too): no pod starts before Kueue admits it. Only Kueue unsuspends it."""
    if labels_:
        job["metadata"]["labels"] |= labels_
        job["spec"]["suspend"] = True
    return job


def trial_objects(
    sweep: api.ScalingSweep,
    uid: str,
    namespace: str,
    trial: Trial,
    config: TrainConfig,
    default_queue: str | None = None,
) -> list[dict[str, Any]]:
    """The Job of one trial, followed by its headless Service when it spans several nodes (the
    caller gives the Service its Job as owner: job_owner). With a queue (the spec's or
    `default_queue`) the Job waits in it, suspended, until Kueue admits it."""
    res = sweep.spec.resources
    name = job_name(sweep.name, trial.id)
    packed = Packing.of(sweep.spec).per_gpu(trial) > 1  # a share of one GPU (sweep.packing)
    nodes = 1 if packed else res.nodes
    meta = {
        "name": name,
        "namespace": namespace,
        "labels": labels(sweep.name, trial),
        "ownerReferences": [owner_reference(sweep, uid)],
    }
    container = trainer_container(sweep.spec, trial, config, name, namespace, nodes, packed)
    pod = trial_pod(sweep.spec, container, name if nodes > 1 else None)
    spec = job_spec(sweep.spec, nodes, {"labels": labels(sweep.name, trial)}, pod)
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": spec}
    objects = [queued(job, queue_labels(res, default_queue))]
    if nodes > 1:  # created after its Job, which owns it (job_owner): it goes when the Job goes
        service_meta = {k: v for k, v in meta.items() if k != "ownerReferences"}
        objects.append(headless_service(service_meta, sweep.name, trial.id))
    return objects


def trainer_container(
    spec: api.ScalingSweepSpec,
    trial: Trial,
    config: TrainConfig,
    name: str,
    namespace: str,
    nodes: int,
    packed: bool,
) -> dict[str, Any]:
    """The trainer's container: the torchx component's command and environment, the rendezvous
    of a multi-node trial, its resources and one torch thread count per rank."""
    res = spec.resources
    app = component(
        config.to_dict(),
        image=res.image,
        name=name,
        nodes=nodes,
        gpus_per_node=1 if packed else res.gpus_per_node,
    )
    role = app.roles[0]
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in sorted(role.env.items())]
    if nodes > 1:  # torchrun reads PET_* for the arguments the component leaves out
        index = {"fieldRef": {"fieldPath": f"metadata.annotations['{INDEX_ANNOTATION}']"}}
        env += [
            {"name": "PET_NODE_RANK", "valueFrom": index},
            {"name": "PET_MASTER_ADDR", "value": f"{name}-0.{name}.{namespace}.svc"},
        ]
    packing = Packing.of(spec)
    resources = _packed_resources(res, packing, trial) if packed else _resources(res)
    # each rank's torch threads: its share of the pod's cores, as the local runner gives each
    # trial its share of the machine (the image's default would oversubscribe the CPU limit)
    ranks = 1 if packed else max(res.gpus_per_node, 1)  # torchrun's --nproc-per-node
    threads = max(1, math.floor(parse_quantity(resources["requests"]["cpu"]) / ranks))
    env.append({"name": "OMP_NUM_THREADS", "value": str(threads)})
    container: dict[str, Any] = {
        "name": "trainer",
        "image": res.image,
        "command": [role.entrypoint],
        "args": list(role.args),
        "env": env,
        "ports": [
            {"name": "metrics", "containerPort": METRICS_PORT},
            {"name": "c10d", "containerPort": MASTER_PORT},
        ],
        "resources": resources,
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": CONTAINER_SECURITY,
    }
    mlflow = spec.tracking.mlflow
    secrets = [res.s3_credentials_secret, mlflow.credentials_secret if mlflow else None]
    if any(secrets):  # S3's, then MLflow's: the trainer's clients read their own variables
        container["envFrom"] = [
            {"secretRef": {"name": n}} for n in dict.fromkeys(filter(None, secrets))
        ]
    return container


def trial_pod(
    spec: api.ScalingSweepSpec, container: dict[str, Any], subdomain: str | None
) -> dict[str, Any]:
    """The pod of a trial: its container, shared memory, the restricted security profile, and
    where it may run (node selector, tolerations, affinity, priority) as the spec says."""
    res = spec.resources
    shm = {"medium": "Memory", "sizeLimit": spec.storage.shared_memory}
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [container],
        "volumes": [{"name": "dshm", "emptyDir": shm}],
        "securityContext": POD_SECURITY,
        "enableServiceLinks": False,
    }
    _placement(pod, res)
    _pod_identity(pod, res)
    if subdomain is not None:
        pod["subdomain"] = subdomain
    return pod


def job_spec(
    spec: api.ScalingSweepSpec, nodes: int, template_meta: dict[str, Any], pod: dict[str, Any]
) -> dict[str, Any]:
    """Failures are retried by the Job; a preempted pod (SIGTERM, checkpoint saved) or a
    disrupted one is retried without counting against the limit; a permanent failure stops it.
    A multi-node trial is an Indexed Job, one pod per node."""
    res, retries = spec.resources, spec.retries.per_trial
    out: dict[str, Any] = {
        "backoffLimit": retries * nodes,
        "activeDeadlineSeconds": res.max_runtime_seconds,
        "ttlSecondsAfterFinished": res.finished_ttl_seconds,
        "podFailurePolicy": {
            "rules": [
                {
                    "action": "Ignore",
                    "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
                },
                # an empty onPodConditions: 1.27's schema wants the field on every rule
                {
                    "action": "Ignore",
                    "onPodConditions": [],
                    "onExitCodes": {
                        "containerName": "trainer",
                        "operator": "In",
                        "values": [PREEMPTED_EXIT_CODE],
                    },
                },
                FAIL_ON_PERMANENT_ERROR,
            ]
        },
        "template": {"metadata": template_meta, "spec": pod},
    }
    if nodes > 1:
        out |= {"completionMode": "Indexed", "completions": nodes, "parallelism": nodes}
    return out


def headless_service(meta: dict[str, Any], sweep: str, trial: str) -> dict[str, Any]:
    """The stable DNS name of a multi-node trial's pods: rank 0 is torchrun's master."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {SWEEP_LABEL: sweep, TRIAL_LABEL: trial},
            "ports": [{"name": "c10d", "port": MASTER_PORT}],
        },
    }


def data_check_job(
    sweep: api.ScalingSweep, uid: str, namespace: str, default_queue: str | None = None
) -> dict[str, Any]:
    """A small CPU Job that reads the sweep's shard indexes with the sweep's own credentials (the
    operator never reads a user's data with its rights) and compares them with the spec; through
    the sweep's queue like its trials."""
    small = {"cpu": "250m", "memory": "512Mi"}
    job = check_job(sweep, uid, namespace, DATA_CHECK, check_data_args(sweep.spec), small)
    if sweep.spec.resources.s3_credentials_secret:
        container = job["spec"]["template"]["spec"]["containers"][0]
        container["envFrom"] = [{"secretRef": {"name": sweep.spec.resources.s3_credentials_secret}}]
    return queued(job, queue_labels(sweep.spec.resources, default_queue))


def model_check_job(
    sweep: api.ScalingSweep,
    uid: str,
    namespace: str,
    rungs: dict[str, Any],
    request: str,
    default_queue: str | None = None,
) -> dict[str, Any]:
    """A CPU Job in the sweep's own trainer image, as the sweep's ServiceAccount, that builds each
    rung of a class family on the meta device and counts its parameters and FLOPs (the operator
    never imports torch, diffusers or a user's family). `request` (the rungs' digest) labels it:
    a Job for other rungs is not this sweep's answer."""
    args = ["check-model", json.dumps(rungs, separators=(",", ":"))]
    resources = {"cpu": "1", "memory": "2Gi"}  # torch and diffusers imported; no weights (meta)
    job = check_job(sweep, uid, namespace, MODEL_CHECK, args, resources, {REQUEST_LABEL: request})
    # where the trials run (no GPU asked): the nodes that may run the sweep's pods, which pull its
    # trainer image anyway; a node the sweep may not use could not run user code under its name
    _placement(job["spec"]["template"]["spec"], sweep.spec.resources)
    return queued(job, queue_labels(sweep.spec.resources, default_queue))


def check_job(
    sweep: api.ScalingSweep,
    uid: str,
    namespace: str,
    role: str,
    args: list[str],
    resources: dict[str, str],
    more_labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A check before any trial: one pod of `isoflop-train ARGS` in the sweep's image, with its
    pod identity, that says its verdict in its termination message (exit 65: refused for good)."""
    job_labels = {
        "app.kubernetes.io/managed-by": "isoflop",
        "app.kubernetes.io/name": f"isoflop-{role}",
        SWEEP_LABEL: sweep.name,
        ROLE_LABEL: role,
        **(more_labels or {}),
    }
    container: dict[str, Any] = {
        "name": "trainer",
        "image": sweep.spec.resources.image,
        "command": ["isoflop-train"],
        "args": args,
        "resources": {"requests": resources, "limits": resources},
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": CONTAINER_SECURITY,
    }
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [container],
        "securityContext": POD_SECURITY,
        "enableServiceLinks": False,
    }
    _pod_identity(pod, sweep.spec.resources)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(sweep.name, role),
            "namespace": namespace,
            "labels": job_labels,
            "ownerReferences": [owner_reference(sweep, uid)],
        },
        "spec": {
            "backoffLimit": 2,  # an unreachable store may come back; a wrong index does not
            "activeDeadlineSeconds": 600,
            "ttlSecondsAfterFinished": sweep.spec.resources.finished_ttl_seconds,
            "podFailurePolicy": {"rules": [FAIL_ON_PERMANENT_ERROR]},
            "template": {"metadata": {"labels": job_labels}, "spec": pod},
        },
    }


def check_data_args(spec: api.ScalingSweepSpec) -> list[str]:
    """`isoflop-train check-data`'s arguments: the shards and the shapes the sweep expects."""
    data, fid = spec.data, spec.evaluation.fid
    c, h, w = data.latent_shape
    args = ["check-data", "--data", data.source, "--latent-shape", str(c), str(h), str(w),
            "--text-length", str(data.text_length), "--text-dim", str(data.text_dim)]  # fmt: skip
    if data.validation_source:
        args += ["--validation", data.validation_source]
    if fid.samples and fid.vae is None:
        args.append("--need-vae")
    return args


def _placement(pod: dict[str, Any], res: api.ResourcesSpec) -> None:
    """Where the sweep's pods may run, as the spec says: node selector, tolerations, affinity,
    priority."""
    if res.node_selector:
        pod["nodeSelector"] = dict(res.node_selector)
    if res.tolerations:
        pod["tolerations"] = [t.to_wire() for t in res.tolerations]
    if res.affinity:
        pod["affinity"] = res.affinity.to_wire()
    if res.priority_class_name:
        pod["priorityClassName"] = res.priority_class_name


def _pod_identity(pod: dict[str, Any], res: api.ResourcesSpec) -> None:
    """The sweep's image pull secrets and ServiceAccount, on any pod the operator creates; no
    API token is mounted (the trainer never calls the Kubernetes API)."""
    pod["automountServiceAccountToken"] = False
    if res.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": n} for n in res.image_pull_secrets]
    if res.service_account_name:
        pod["serviceAccountName"] = res.service_account_name


def _resources(res: api.ResourcesSpec) -> dict[str, Any]:
    amounts: dict[str, Any] = {"cpu": res.cpu, "memory": res.memory}
    limits = dict(amounts)
    if res.gpus_per_node:
        limits["nvidia.com/gpu"] = str(res.gpus_per_node)
    return {"requests": amounts, "limits": limits}


def _packed_resources(res: api.ResourcesSpec, packing: Packing, trial: Trial) -> dict[str, Any]:
    """A packed trial's share: ceil(replicas / k) of the GPU-sharing plugin's resource, and 1/k
    of the CPU and memory an unpacked trial gets (k of them share a node's GPU)."""
    if res.packing is None or res.packing.shared_gpu_resource is None:  # admission refuses it
        raise ValueError("a packed trial on a cluster needs packing.sharedGpuResource")
    k = packing.per_gpu(trial)
    cpu = max(math.floor(parse_quantity(res.cpu) * 1000 / k), 1)
    memory = max(math.floor(parse_quantity(res.memory) / k), 1)
    amounts: dict[str, Any] = {"cpu": f"{cpu}m", "memory": str(memory)}
    limits = {**amounts, res.packing.shared_gpu_resource: str(packing.replicas_requested(trial))}
    return {"requests": amounts, "limits": limits}


def stable_root(sweep: api.ScalingSweep) -> str | None:
    """Where a sweep's stable runs keep the checkpoints their WSD branches start from."""
    base = sweep.spec.storage.checkpoints
    return f"{base.rstrip('/')}/{sweep.name}/stable" if base else None


def cluster_config(
    sweep: api.ScalingSweep, trial: Trial, scraped: bool | None = None
) -> dict[str, Any]:
    """Paths and telemetry of a trial on a cluster, for `trials.train_config`. `scraped`: its
    result is read from Prometheus (default: the sweep names a Prometheus), so the trainer keeps
    serving its final values long enough for a scrape; otherwise the pod, and its GPUs, are free
    as soon as the result is written."""
    if scraped is None:
        scraped = sweep.spec.metrics.prometheus_url is not None
    base = sweep.spec.storage.checkpoints
    root = f"{base.rstrip('/')}/{sweep.name}" if base else None
    return {
        "checkpoint": f"{root}/{trial.id}" if root else "/tmp/checkpoint",
        # trials of one rung share compiled kernels; without storage each pod compiles its own
        "compile_cache": f"{root}/compile-cache" if root else None,
        "checkpoint_every": max(trial.steps // 20, 100),
        "results": "/tmp/result.json",
        "termination_log": "/dev/termination-log",
        "metrics_port": METRICS_PORT,
        "metrics_linger_seconds": METRICS_LINGER_SECONDS if scraped else 0.0,
    }


RECORDS = "trial-records"  # the role of the ConfigMaps that keep a sweep's per-trial records


def records_name(sweep: str, budget: float) -> str:
    """The ConfigMap of one budget's trial records: '<sweep>-trials-<budget tag>'."""
    return f"{sweep}-trials-{budget_tag(budget)}"


def records_configmap(
    sweep: api.ScalingSweep, uid: str, namespace: str, budget: float, data: dict[str, str]
) -> dict[str, Any]:
    """A budget's finished-trial records (trial ID -> the record's JSON), owned by the sweep."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": records_name(sweep.name, budget),
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/managed-by": "isoflop",
                SWEEP_LABEL: sweep.name,
                BUDGET_LABEL: budget_tag(budget),
                ROLE_LABEL: RECORDS,
            },
            "ownerReferences": [owner_reference(sweep, uid)],
        },
        "data": data,
    }
