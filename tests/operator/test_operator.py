"""The operator on the kmock emulator: Jobs within parallelism, results to laws, invalid specs."""

from __future__ import annotations

import asyncio
import copy
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import kmock
import pytest
from prometheus_client import REGISTRY

from isoflop import api
from isoflop.sweep.plan import plan
from isoflop.sweep.strategy import graph
from tests.operator.conftest import running_operator, wait_for
from tests.operator.emulator import SWEEPS, ended_pod, finish, trial_records

ROOT = Path(__file__).resolve().parents[2]
JOBS = kmock.resource("batch/v1/jobs")
SWEEP_KEY = (kmock.resource(SWEEPS), "default", "qs")


def manifest(**spec: Any) -> dict[str, Any]:
    obj = api.yaml_load((Path(__file__).parent / "small-sweep.yaml").read_text())
    # kmock assigns no uid or resourceVersion: give what an API server would
    obj["metadata"] = {
        "name": "qs",
        "namespace": "default",
        "uid": "uid-qs",
        "generation": 1,
        "resourceVersion": "1",
    }
    obj["spec"].update(spec)
    return obj


def real_create(request: Any, resource: Any) -> bool:
    """A create of `resource` that stores it (not one of the operator's dry runs)."""
    return bool(
        request.action == kmock.action.CREATE
        and request.resource == resource
        and not request.params.get("dryRun")
    )


def jobs(k8s: Any) -> dict[str, dict[str, Any]]:
    return {
        key[2]: obj for key, obj in list(k8s.objects.items()) if key[0] == JOBS and not obj.deleted
    }


def sweep_status(k8s: Any) -> dict[str, Any]:
    return dict(k8s.objects[SWEEP_KEY].get("status") or {})


def loss_of(trial: Any) -> float:
    """A convex isoFLOP curve per budget whose minimum grows as C^0.5 (inside each ladder)."""
    x_opt = 5.2 + 0.5 * (math.log10(trial.budget) - 10.5)
    return 1.0 - 0.05 * math.log10(trial.budget) + 0.2 * (math.log10(trial.params) - x_opt) ** 2


async def test_a_sweep_runs_its_trials_within_parallelism_to_fitted_laws(k8s: Any) -> None:
    obj = manifest(parallelism=3)
    sweep = api.parse_sweep(obj)
    trials = {f"qs-{t.id}": t for t in plan(sweep.spec).trials}
    async with running_operator(k8s):
        resp = await k8s.post(
            "/apis/isoflop.dev/v1alpha1/namespaces/default/scalingsweeps", json=obj
        )
        assert resp.status == 200
        await wait_for(lambda: len(jobs(k8s)) == 3)
        first = jobs(k8s)
        assert sorted(first) == ["qs-3e10-d01", "qs-3e10-d02", "qs-3e10-d03"]  # smallest first
        pod = first["qs-3e10-d01"]["spec"]["template"]["spec"]
        assert pod["containers"][0]["command"] == ["isoflop-torchrun"]
        assert first["qs-3e10-d01"]["metadata"]["ownerReferences"][0]["uid"] == "uid-qs"
        done: set[str] = set()
        while len(done) < len(trials):
            current = jobs(k8s)
            running = [n for n in current if n not in done]
            assert len(running) <= 3  # parallelism is never exceeded
            for name in running:
                await finish(k8s, name, {"status": "succeeded", "eval_loss": loss_of(trials[name])})
                done.add(name)
            await wait_for(
                lambda: (
                    len(jobs(k8s)) > len(done)
                    or len(done) == len(trials)
                    or sweep_status(k8s).get("phase") == "Failed"
                )
            )
        await wait_for(lambda: sweep_status(k8s).get("phase") == "Succeeded")
    status = sweep_status(k8s)
    assert status["progress"] == f"{len(trials)}/{len(trials)}"
    done = [t for t in trial_records(k8s) if t["phase"] == "Succeeded"]
    assert len(done) == len(trials)
    assert {t["source"] for t in done} == {"termination-message"}
    assert not status.get("trials")  # per-budget summaries in the status, records in ConfigMaps
    assert sum(b["succeeded"] for b in status["budgets"]) == len(trials)
    assert abs(status["fit"]["laws"]["params"]["exponent"] - 0.5) < 0.05
    assert len(status["fit"]["budgetFits"]) == 3
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions["Ready"] == "True"
    creates = Counter(r.data["metadata"]["name"] for r in k8s if real_create(r, JOBS))
    assert len(creates) == len(trials)
    assert set(creates.values()) == {1}  # every Job created exactly once
    labels = {"namespace": "default", "sweep": "qs"}
    succeeded = REGISTRY.get_sample_value(
        "isoflop_operator_trials", {**labels, "phase": "succeeded"}
    )
    assert succeeded == len(trials)
    law = status["fit"]["laws"]["params"]
    for bound, value in [
        ("estimate", law["exponent"]),
        ("low", law["exponentInterval"]["low"]),
        ("high", law["exponentInterval"]["high"]),
    ]:
        sample = {**labels, "law": "params", "bound": bound}
        assert REGISTRY.get_sample_value("isoflop_operator_exponent", sample) == value
    assert REGISTRY.get_sample_value("isoflop_operator_reconcile_errors_total", labels) == 0


async def test_a_nan_result_is_a_failed_trial_not_a_fit_input(k8s: Any) -> None:
    obj = manifest(parallelism=1, retries={"perTrial": 0, "maxFailedTrials": 0})
    async with running_operator(k8s):
        await k8s.post("/apis/isoflop.dev/v1alpha1/namespaces/default/scalingsweeps", json=obj)
        await wait_for(lambda: "qs-3e10-d01" in jobs(k8s))
        await finish(k8s, "qs-3e10-d01", {"status": "succeeded", "eval_loss": "nan"})
        await wait_for(lambda: sweep_status(k8s).get("phase") == "Failed")
    status = sweep_status(k8s)
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "TooManyFailedTrials"
    assert "3e10-d01" in failed["message"]
    assert len(jobs(k8s)) == 1  # nothing launched after the sweep failed


INVALID = [
    ("model.family", "unet", "spec.model.family"),
    ("model.depths", [0, 1], "spec.model.depths[0]"),
    ("model.depths", [2, 2], "spec.model.depths"),
    ("model.depths", [], "spec.model"),
    ("model.headDim", 48, "spec.model"),
    ("model.patchSize", 0, "spec.model.patchSize"),
    ("model.mlpRatio", -1, "spec.model.mlpRatio"),
    ("model.typo", 1, "spec.model.typo"),
    ("budgets", [], "spec.budgets"),
    ("budgets", [-1.0], "spec.budgets[0]"),
    ("budgets", [1e12, 1e12], "spec.budgets"),
    ("flopsAccounting", "7ND", "spec.flopsAccounting"),
    ("data.source", "http://x", "spec.data.source"),
    ("data.latentShape", [3, 15, 16], "spec"),
    ("data.textLength", 0, "spec.data.textLength"),
    ("training.globalBatchSize", 0, "spec.training.globalBatchSize"),
    ("training.learningRate", 0, "spec.training.learningRate"),
    ("training.betas", [0.9, 1.2], "spec.training.betas"),
    ("training.schedule", "linear", "spec.training.schedule"),
    ("training.precision", "int4", "spec.training.precision"),
    ("resources.memory", "lots", "spec.resources.memory"),
    ("resources.gpusPerNode", -1, "spec.resources.gpusPerNode"),
    ("parallelism", 0, "spec.parallelism"),
    ("metrics.prometheusUrl", "prometheus:9090", "spec.metrics.prometheusUrl"),
    ("fit.holdOutBudget", 7e10, "spec"),
    ("strategy.wsdBranches", {"cooldown": 1.5}, "spec.strategy.wsdBranches.cooldown"),
    # a branch starts from a checkpoint another pod wrote: without storage there is none to share
    ("strategy.wsdBranches", {"cooldown": 0.2}, "spec.strategy.wsdBranches needs"),
    ("strategy.adaptive", {"seedBudgets": 4}, "spec"),
    ("strategy.adaptive", {"stride": 0}, "spec.strategy.adaptive.stride"),
    # packed trials need a GPU-sharing plugin's resource on a cluster
    ("resources.packing", {"maxTrialsPerGpu": 4}, "spec.resources.packing needs sharedGpu"),
    ("resources.packing", {"replicasPerGpu": 4}, "spec.resources.packing"),
    ("resources.packing", {"sharedGpuResource": "gpu", "replicasPerGpu": 4}, "spec.resources"),
    ("resources.packing", {"saturationMfu": 2}, "spec.resources.packing.saturationMfu"),
]


async def test_invalid_specs_get_a_condition_naming_the_field_and_no_jobs(k8s: Any) -> None:
    async with running_operator(k8s):
        for i, (path, value, _) in enumerate(INVALID):
            obj = manifest()
            obj["metadata"] = {
                "name": f"bad{i}",
                "namespace": "default",
                "uid": f"u{i}",
                "resourceVersion": "1",
            }
            node = obj["spec"]
            *parents, leaf = path.split(".")
            for key in parents:
                node = node.setdefault(key, {})
            node[leaf] = copy.deepcopy(value)
            await k8s.post("/apis/isoflop.dev/v1alpha1/namespaces/default/scalingsweeps", json=obj)
        keys = [(kmock.resource(SWEEPS), "default", f"bad{i}") for i in range(len(INVALID))]
        await wait_for(
            lambda: all((k8s.objects[k].get("status") or {}).get("phase") == "Failed" for k in keys)
        )
    assert jobs(k8s) == {}
    for key, (_, _, field) in zip(keys, INVALID, strict=True):
        ready = next(c for c in k8s.objects[key]["status"]["conditions"] if c["type"] == "Ready")
        assert ready["reason"] == "InvalidSpec"
        assert ready["message"].startswith(field), (field, ready["message"])


async def run_to_end(k8s: Any, trials: dict[str, Any], done: set[str]) -> None:
    """Finish every Job the operator creates until the sweep succeeds."""
    while sweep_status(k8s).get("phase") != "Succeeded":
        for name in [n for n in jobs(k8s) if n not in done]:
            await finish(k8s, name, {"status": "succeeded", "eval_loss": loss_of(trials[name])})
            done.add(name)
        await asyncio.sleep(0.05)


async def fail_job(k8s: Any, name: str) -> None:
    await k8s.patch(
        f"/apis/batch/v1/namespaces/default/jobs/{name}/status",
        json={
            "status": {
                "failed": 3,
                "conditions": [
                    {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}
                ],
            }
        },
    )


async def test_failed_jobs_spend_the_failure_budget_then_fail_the_sweep(k8s: Any) -> None:
    obj = manifest(parallelism=2, retries={"perTrial": 2, "maxFailedTrials": 1})
    async with running_operator(k8s):
        await k8s.post("/apis/isoflop.dev/v1alpha1/namespaces/default/scalingsweeps", json=obj)
        await wait_for(lambda: len(jobs(k8s)) == 2)
        assert jobs(k8s)["qs-3e10-d01"]["spec"]["backoffLimit"] == 2  # retries through the Job
        await fail_job(k8s, "qs-3e10-d01")
        await wait_for(lambda: len(jobs(k8s)) == 3)  # one failure is within budget: go on
        assert sweep_status(k8s).get("phase") == "Running"
        await fail_job(k8s, "qs-3e10-d02")
        await wait_for(lambda: sweep_status(k8s).get("phase") == "Failed")
        await asyncio.sleep(0.5)
    status = sweep_status(k8s)
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "TooManyFailedTrials"
    assert "3e10-d01" in failed["message"]
    assert "qs-3e10-d03" not in jobs(k8s)  # the running trial was cancelled


async def test_a_permanent_failure_fails_its_trial_once_whatever_the_pod_exited_with(
    k8s: Any,
) -> None:
    """A pod that failed with exit 1 (a launcher that does not pass its ranks' 65 on: an older
    image's plain torchrun) escapes the Job's exit-code rule: the termination message still says
    the failure is permanent, and the operator stops the Job's retries and records it once."""
    obj = manifest(parallelism=1, retries={"perTrial": 3, "maxFailedTrials": 5})
    error = "training loss became nan at step 0"
    async with running_operator(k8s):
        await k8s.post("/apis/isoflop.dev/v1alpha1/namespaces/default/scalingsweeps", json=obj)
        await wait_for(lambda: "qs-3e10-d01" in jobs(k8s))
        await k8s.patch(  # one pod failed; the Job, within its backoff limit, runs another
            "/apis/batch/v1/namespaces/default/jobs/qs-3e10-d01/status",
            json={"status": {"active": 1, "failed": 1}},
        )
        await ended_pod(k8s, "qs-3e10-d01", {"status": "failed", "error": error,
                                             "permanent": True}, exit_code=1)  # fmt: skip
        await wait_for(lambda: "qs-3e10-d01" not in jobs(k8s))  # deleted: no more retries
        await wait_for(lambda: "qs-3e10-d02" in jobs(k8s))  # and the sweep goes on
    (record,) = [r for r in trial_records(k8s) if r["id"] == "3e10-d01"]
    assert record["phase"] == "Failed"
    assert record["error"] == error
    assert record["attempts"] == 2


async def test_attempts_are_counted_per_attempt_and_kept_in_the_record(k8s: Any) -> None:
    """A trial that succeeded after a failed pod records 2 attempts (it said 1 whenever it
    succeeded); a 2-node trial whose two ranks failed together is on its 2nd attempt, not its
    3rd, and its failed-attempts metric says 1. A failure whose pod is gone (deleted: it cannot
    say whether the Job's policy ignored it, as a preempted one) counts no attempt."""
    obj = manifest(parallelism=2, resources={"gpusPerNode": 1, "nodes": 2})
    lost = {"status": "failed", "error": "rank 1 was killed"}
    metric = "isoflop_operator_trial_failed_attempts"
    labels = {"namespace": "default", "sweep": "qs", "trial": "3e10-d01"}
    async with running_operator(k8s):
        await k8s.post("/apis/isoflop.dev/v1alpha1/namespaces/default/scalingsweeps", json=obj)
        await wait_for(lambda: "qs-3e10-d01" in jobs(k8s))
        assert jobs(k8s)["qs-3e10-d01"]["spec"]["completions"] == 2  # one pod per node
        await k8s.patch(  # both ranks of the first attempt failed; the Job runs them again
            "/apis/batch/v1/namespaces/default/jobs/qs-3e10-d01/status",
            json={"status": {"active": 2, "failed": 2}},
        )
        for rank in ("r0", "r1"):
            await ended_pod(k8s, "qs-3e10-d01", lost, exit_code=1, suffix=rank)
        await wait_for(lambda: REGISTRY.get_sample_value(metric, labels) == 1)
        await k8s.patch(
            "/apis/batch/v1/namespaces/default/jobs/qs-3e10-d01/status",
            json={"status": {"active": 0, "succeeded": 2,
                             "conditions": [{"type": "Complete", "status": "True"}]}},
        )  # fmt: skip
        await ended_pod(k8s, "qs-3e10-d01", {"status": "succeeded", "eval_loss": 0.5}, 0, "ok")
        await wait_for(lambda: any(r["id"] == "3e10-d01" for r in trial_records(k8s)))
        await wait_for(lambda: "qs-3e10-d02" in jobs(k8s))
        await k8s.patch(  # a pod failed and was deleted since; the retry succeeds
            "/apis/batch/v1/namespaces/default/jobs/qs-3e10-d02/status",
            json={"status": {"active": 0, "failed": 1, "succeeded": 2,
                             "conditions": [{"type": "Complete", "status": "True"}]}},
        )  # fmt: skip
        await ended_pod(k8s, "qs-3e10-d02", {"status": "succeeded", "eval_loss": 0.4}, 0, "ok")
        await wait_for(lambda: any(r["id"] == "3e10-d02" for r in trial_records(k8s)))
    records = {r["id"]: r for r in trial_records(k8s)}
    assert records["3e10-d01"]["phase"] == "Succeeded"
    assert records["3e10-d01"]["attempts"] == 2
    assert records["3e10-d02"]["attempts"] == 1


async def test_a_trial_whose_pod_no_node_takes_says_so_and_is_not_running(k8s: Any) -> None:
    """The Job's `active` counts a pod that waits for a node: the trial is starting, not
    running, and the sweep's message and an event give the scheduler's words; no failure."""
    obj = manifest(parallelism=1)
    why = "0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 nodes are available"
    async with running_operator(k8s):
        await k8s.post("/apis/isoflop.dev/v1alpha1/namespaces/default/scalingsweeps", json=obj)
        await wait_for(lambda: "qs-3e10-d01" in jobs(k8s))
        await k8s.patch(
            "/apis/batch/v1/namespaces/default/jobs/qs-3e10-d01/status",
            json={"status": {"active": 1}},
        )
        await k8s.post("/api/v1/namespaces/default/pods", json={
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "qs-3e10-d01-p", "namespace": "default",
                         "labels": {"job-name": "qs-3e10-d01", "isoflop.dev/sweep": "qs"}},
            "spec": {"containers": [{"name": "trainer", "image": "t"}]},
            "status": {"phase": "Pending", "conditions": [{
                "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": why}]},
        })  # fmt: skip

        def ready() -> str:
            conditions = sweep_status(k8s).get("conditions") or []
            return next((c["message"] for c in conditions if c["type"] == "Ready"), "")

        await wait_for(lambda: "cannot be scheduled" in ready())
        status = sweep_status(k8s)
        assert ready().endswith(f"; 1 trial cannot be scheduled (3e10-d01: {why})")
        assert status["counts"]["running"] == 0
        assert status["counts"]["starting"] == 1
        assert status["counts"]["failed"] == 0
        events = [
            r.data for r in k8s
            if r.action == kmock.action.CREATE and r.resource == kmock.resource("v1/events")
        ]  # fmt: skip
        said = [e for e in events if e.get("reason") == "TrialUnschedulable"]
        assert [e["message"] for e in said] == [f"3e10-d01: {why}"]  # once, not per reconcile


async def test_adding_a_budget_to_a_running_sweep_adds_only_its_trials(k8s: Any) -> None:
    obj = manifest(parallelism=20)
    trials = {f"qs-{t.id}": t for t in plan(api.parse_sweep(obj).spec).trials}
    done: set[str] = set()
    async with running_operator(k8s):
        await k8s.post("/apis/isoflop.dev/v1alpha1/namespaces/default/scalingsweeps", json=obj)
        await asyncio.wait_for(run_to_end(k8s, trials, done), 60)
        before = set(jobs(k8s))
        grown = copy.deepcopy(obj["spec"])
        grown["budgets"] = [*grown["budgets"], 1e12]
        await k8s.patch(
            "/apis/isoflop.dev/v1alpha1/namespaces/default/scalingsweeps/qs",
            json={"spec": grown, "metadata": {"generation": 2}},
        )
        await wait_for(lambda: len(jobs(k8s)) > len(before))
        await asyncio.sleep(0.5)
        added = set(jobs(k8s)) - before
        assert added == {"qs-1e12-d01", "qs-1e12-d02", "qs-1e12-d03", "qs-1e12-d04"}
        grown_plan = plan(api.parse_spec(grown))
        trials.update({f"qs-{t.id}": t for t in grown_plan.trials})
        await asyncio.wait_for(run_to_end(k8s, trials, done), 60)
    status = sweep_status(k8s)
    assert status["progress"] == f"{len(trials)}/{len(trials)}"
    assert 1e12 in status["fittedBudgets"]


async def test_changing_an_immutable_field_is_refused_with_a_condition(k8s: Any) -> None:
    obj = manifest(parallelism=1)
    async with running_operator(k8s):
        await k8s.post("/apis/isoflop.dev/v1alpha1/namespaces/default/scalingsweeps", json=obj)
        await wait_for(lambda: len(jobs(k8s)) == 1)
        changed = copy.deepcopy(obj["spec"])
        changed["model"]["family"] = "cross-attention"
        await k8s.patch(
            "/apis/isoflop.dev/v1alpha1/namespaces/default/scalingsweeps/qs",
            json={"spec": changed, "metadata": {"generation": 2}},
        )
        await wait_for(
            lambda: any(
                c.get("reason") == "InvalidSpec" for c in sweep_status(k8s).get("conditions", [])
            )
        )
        await asyncio.sleep(2.0)  # ten reconciles: none undoes the refusal or acts on the change
        status = sweep_status(k8s)
        assert status["phase"] == "Failed"
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert ready["reason"] == "InvalidSpec"
        assert ready["message"].startswith("spec.model.family is immutable")
        assert len(jobs(k8s)) == 1  # no trial of the other family was launched
        # restored, the sweep goes on where it was
        await k8s.patch(
            "/apis/isoflop.dev/v1alpha1/namespaces/default/scalingsweeps/qs",
            json={"spec": obj["spec"], "metadata": {"generation": 3}},
        )
        await wait_for(lambda: sweep_status(k8s).get("phase") == "Running")
        conditions = sweep_status(k8s)["conditions"]
        assert not any(c.get("reason") == "InvalidSpec" for c in conditions)


async def test_shard_data_is_checked_by_a_job_before_any_trial_starts(k8s: Any) -> None:
    """The data check runs as a Job with the sweep's credentials: the operator never reads a
    user's bucket with its own rights. Trials start only once it has passed."""
    data = {"source": "s3://team-bucket/latents", "latentShape": [3, 16, 16], "textLength": 8,
            "textDim": 32}  # fmt: skip
    obj = manifest(
        data=data,
        parallelism=2,
        resources={"image": "trainer:1", "s3CredentialsSecret": "team-s3"},
        evaluation={"fid": {"samples": 64, "features": "random-conv"}},
    )
    async with running_operator(k8s):
        await k8s.post("/apis/isoflop.dev/v1alpha1/namespaces/default/scalingsweeps", json=obj)
        await wait_for(lambda: "qs-data-check" in jobs(k8s))
        check = jobs(k8s)["qs-data-check"]
        container = check["spec"]["template"]["spec"]["containers"][0]
        assert container["command"] == ["isoflop-train"]
        args = container["args"]
        assert args[:3] == ["check-data", "--data", "s3://team-bucket/latents"]
        assert args[args.index("--latent-shape") + 1 : args.index("--latent-shape") + 4] == [
            "3", "16", "16"
        ]  # fmt: skip
        assert "--need-vae" in args  # FID asked for, no VAE given: the index must name one
        assert container["envFrom"] == [{"secretRef": {"name": "team-s3"}}]
        rules = check["spec"]["podFailurePolicy"]["rules"]
        assert rules[0]["action"] == "FailJob"
        assert rules[0]["onExitCodes"]["values"] == [65]
        await asyncio.sleep(1.0)  # several reconciles: still only the check
        assert list(jobs(k8s)) == ["qs-data-check"]
        status = sweep_status(k8s)
        assert status["phase"] == "Pending"
        ready = next(c for c in status["conditions"] if c["type"] == "DataReady")
        assert (ready["status"], ready["reason"]) == ("False", "CheckingData")
        await finish(
            k8s,
            "qs-data-check",
            {"status": "succeeded", "samples": 4000, "validation_samples": 200},
        )
        await wait_for(lambda: len(jobs(k8s)) == 3)  # the check, then trials within parallelism
    status = sweep_status(k8s)
    assert status["data"]["ready"] is True
    assert status["data"]["samples"] == 4000
    lo, hi = status["data"]["epochs"]
    assert 0 < lo <= hi
    ready = next(c for c in status["conditions"] if c["type"] == "DataReady")
    assert ready["status"] == "True"
    assert "4000 training samples; a planned trial makes" in ready["message"]


async def test_mismatched_data_fails_the_sweep_once_with_its_sentence(k8s: Any) -> None:
    data = {"source": "s3://team-bucket/latents", "latentShape": [3, 16, 16], "textLength": 8,
            "textDim": 32}  # fmt: skip
    sentence = (
        "data.source s3://team-bucket/latents holds latents 4x32x32, text 77x768, but the spec "
        "asks for latents 3x16x16, text 8x32 (check data.latentShape, data.textLength, "
        "data.textDim)"
    )
    async with running_operator(k8s):
        await k8s.post(
            "/apis/isoflop.dev/v1alpha1/namespaces/default/scalingsweeps",
            json=manifest(data=data),
        )
        await wait_for(lambda: "qs-data-check" in jobs(k8s))
        await finish(
            k8s,
            "qs-data-check",
            {"status": "failed", "error": sentence, "permanent": True},
            exit_code=65,
        )
        await wait_for(lambda: sweep_status(k8s).get("phase") == "Failed")
        await asyncio.sleep(0.5)  # later reconciles keep it so, and start nothing
        assert list(jobs(k8s)) == ["qs-data-check"]
    status = sweep_status(k8s)
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "InvalidData"
    assert failed["message"] == sentence
    assert status["data"] == {"ready": False, "message": sentence}


async def test_a_sweep_outside_the_installations_policy_is_refused_and_creates_nothing(
    k8s: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chart's allowlists reach the operator as environment variables: a sweep naming an
    image, a ServiceAccount or a Prometheus URL outside them runs nothing (the operator creates
    its pods with its own rights)."""
    monkeypatch.setenv("ISOFLOP_ALLOWED_IMAGES", "ghcr.io/isoflop/*")
    monkeypatch.setenv("ISOFLOP_ALLOWED_SERVICE_ACCOUNTS", "default,trainer")
    monkeypatch.setenv("ISOFLOP_ALLOWED_PROMETHEUS_URLS", "")
    cases = {
        "image": ({"resources": {"image": "docker.io/evil/miner:1"}}, "spec.resources.image"),
        "account": (
            {"resources": {"image": "ghcr.io/isoflop/t:1", "serviceAccountName": "admin"}},
            "spec.resources.serviceAccountName",
        ),
        "metadata": (
            {
                "resources": {"image": "ghcr.io/isoflop/t:1"},
                "metrics": {"prometheusUrl": "http://169.254.169.254/latest"},
            },
            "spec.metrics.prometheusUrl",
        ),
    }
    async with running_operator(k8s):
        for name, (spec, _) in cases.items():
            obj = manifest(**spec)
            obj["metadata"] = {**obj["metadata"], "name": name, "uid": f"uid-{name}"}
            await k8s.post("/apis/isoflop.dev/v1alpha1/namespaces/default/scalingsweeps", json=obj)
        allowed = manifest(parallelism=1, resources={"image": "ghcr.io/isoflop/trainer:0.2"})
        await k8s.post("/apis/isoflop.dev/v1alpha1/namespaces/default/scalingsweeps", json=allowed)
        keys = {n: (kmock.resource(SWEEPS), "default", n) for n in cases}
        await wait_for(
            lambda: all(
                (k8s.objects[k].get("status") or {}).get("phase") == "Failed" for k in keys.values()
            )
        )
        await wait_for(lambda: len(jobs(k8s)) == 1)  # the allowed sweep runs
    assert list(jobs(k8s)) == ["qs-3e10-d01"]
    for name, (_, field) in cases.items():
        conditions = k8s.objects[keys[name]]["status"]["conditions"]
        ready = next(c for c in conditions if c["type"] == "Ready")
        assert ready["reason"] == "InvalidSpec"
        assert ready["message"].startswith(field), ready["message"]


def train_config(job: dict[str, Any]) -> dict[str, Any]:
    """The trainer's settings a trial's Job carries (the component's --config-json)."""
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    return dict(json.loads(args[args.index("--config-json") + 1]))


async def test_wsd_branches_wait_for_their_stable_segment_and_share_its_checkpoints(
    k8s: Any,
) -> None:
    obj = manifest(
        parallelism=20,
        strategy={"wsdBranches": {"cooldown": 0.2}},
        storage={"checkpoints": "s3://bucket/ckpt"},
    )
    sweep = api.parse_sweep(obj)
    nodes = {f"qs-{n.id}": n for n in graph(sweep.spec, plan(sweep.spec).trials).nodes}
    async with running_operator(k8s):
        await k8s.post("/apis/isoflop.dev/v1alpha1/namespaces/default/scalingsweeps", json=obj)
        await wait_for(lambda: len(jobs(k8s)) == 4)
        # first: each rung's stable run to its first branch point, and nothing that waits for one
        assert set(jobs(k8s)) == {
            "qs-3e10-d01-stable",
            "qs-3e10-d02-stable",
            "qs-3e10-d03-stable",
            "qs-1e11-d04-stable",  # d04 does not fit 3e10
        }
        done: set[str] = set()
        while sweep_status(k8s).get("phase") != "Succeeded":
            for name, job in jobs(k8s).items():
                if name in done:
                    continue
                node = nodes[name]
                if node.after is not None:  # its parent's checkpoint was written first
                    assert f"qs-{node.after}" in done
                cfg = train_config(job)
                run = f"s3://bucket/ckpt/qs/stable/{node.run}"
                if node.kind == "stable":
                    assert (cfg["checkpoint"], cfg["schedule"]) == (run, "constant")
                    assert cfg["branch_points"] == [node.trial.steps]
                else:
                    assert (cfg["branch_from"], cfg["branch_step"]) == (run, node.branch_step)
                    assert cfg["checkpoint"] == f"s3://bucket/ckpt/qs/{node.id}"
                await finish(k8s, name, {"status": "succeeded", "eval_loss": loss_of(node.trial)})
                done.add(name)
            await asyncio.sleep(0.05)
    assert done == set(nodes)
    status = sweep_status(k8s)
    records = {r["id"]: r for r in trial_records(k8s)}
    assert {r.get("kind") for r in records.values()} == {"stable", "branch"}
    assert records["1e11-d02"]["branchedFrom"] == "1e11-d02-stable"
    assert status["strategy"]["branches"] == len(plan(sweep.spec).trials)
    assert status["strategy"]["computeFraction"] < 0.8
    assert abs(status["fit"]["laws"]["params"]["exponent"] - 0.5) < 0.05


async def test_packed_trials_share_gpus_through_the_sharing_plugins_resource(k8s: Any) -> None:
    """spec.resources.packing on a cluster: each packed trial is its own Job requesting a share
    of a GPU-sharing plugin's resource; parallelism 1 (one GPU's worth) runs 4 tiny trials at
    once, and one of them failing leaves the others to finish."""
    packing = {"maxTrialsPerGpu": 4, "sharedGpuResource": "nvidia.com/gpu.shared"}
    obj = manifest(parallelism=1, resources={"packing": {**packing, "replicasPerGpu": 4}})
    sweep = api.parse_sweep(obj)
    trials = {f"qs-{t.id}": t for t in plan(sweep.spec).trials}
    most, failed = 0, ""
    async with running_operator(k8s):
        await k8s.post("/apis/isoflop.dev/v1alpha1/namespaces/default/scalingsweeps", json=obj)
        await wait_for(lambda: len(jobs(k8s)) == 4)
        done: set[str] = set()
        while sweep_status(k8s).get("phase") != "Succeeded":
            live = {n: j for n, j in jobs(k8s).items() if n not in done}
            most = max(most, len(live))
            for name, job in live.items():
                (c,) = job["spec"]["template"]["spec"]["containers"]
                assert c["resources"]["limits"]["nvidia.com/gpu.shared"] == "1"
                assert "nvidia.com/gpu" not in c["resources"]["limits"]
                if not failed:  # the first pack-mate fails; the other three go on
                    failed = name
                    await finish(k8s, name, {"status": "failed", "error": "boom"}, exit_code=1)
                else:
                    loss = loss_of(trials[name])
                    await finish(k8s, name, {"status": "succeeded", "eval_loss": loss})
                done.add(name)
            await asyncio.sleep(0.05)
    assert most == 4  # never more than one GPU's worth: 4 quarters
    records = {r["id"]: r for r in trial_records(k8s)}
    assert records[failed.removeprefix("qs-")]["phase"] == "Failed"
    assert sum(r["phase"] == "Succeeded" for r in records.values()) == len(trials) - 1


async def test_a_trial_waiting_in_kueue_is_queued_and_an_eviction_is_no_failure(k8s: Any) -> None:
    """With a queue, the Jobs are created suspended and the trials are Queued (status counts,
    budgets, the queued gauge) until Kueue unsuspends them; an eviction (suspended again, the
    pod gone after checkpointing on SIGTERM) puts the trial back to Queued with no failed
    attempt; admitted again it finishes once. The operator never patches a Job (only Kueue
    flips suspend)."""
    obj = manifest(parallelism=2, resources={"queueName": "team"})
    trials = {f"qs-{t.id}": t for t in plan(api.parse_sweep(obj).spec).trials}
    url = "/apis/batch/v1/namespaces/default/jobs"
    labels = {"namespace": "default", "sweep": "qs"}

    def counts() -> dict[str, int]:
        return dict(sweep_status(k8s).get("counts") or {})

    async with running_operator(k8s):
        await k8s.post("/apis/isoflop.dev/v1alpha1/namespaces/default/scalingsweeps", json=obj)
        await wait_for(lambda: len(jobs(k8s)) == 2)
        assert all(j["spec"]["suspend"] is True for j in jobs(k8s).values())
        assert all(
            j["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team"
            for j in jobs(k8s).values()
        )
        await wait_for(lambda: counts().get("queued") == 2)
        # Kueue's Workload of a Job says why it waits: the status's message says it too
        workload = {
            "apiVersion": "kueue.x-k8s.io/v1beta2",
            "kind": "Workload",
            "metadata": {
                "name": "job-qs-3e10-d02-1a2b3",
                "namespace": "default",
                "ownerReferences": [
                    {"kind": "Job", "name": "qs-3e10-d02", "apiVersion": "batch/v1"}
                ],
            },
            "status": {
                "conditions": [
                    {
                        "type": "QuotaReserved",
                        "status": "False",
                        "reason": "Pending",
                        "message": "couldn't assign flavors to pod set main: insufficient unused "
                        "quota for nvidia.com/gpu in flavor h100, 1 more needed",
                    }
                ]
            },
        }
        await k8s.post("/apis/kueue.x-k8s.io/v1beta2/namespaces/default/workloads", json=workload)

        def ready_message() -> str:
            ready = [c for c in sweep_status(k8s).get("conditions") or [] if c["type"] == "Ready"]
            return str(ready[0]["message"]) if ready else ""

        await wait_for(lambda: "1 more needed" in ready_message())
        assert ready_message().endswith(
            "0 running, 2 waiting in the queue (Kueue: couldn't assign flavors to pod set main: "
            "insufficient unused quota for nvidia.com/gpu in flavor h100, 1 more needed)"
        )
        queued = {**labels, "phase": "queued"}
        assert REGISTRY.get_sample_value("isoflop_operator_trials", queued) == 2
        assert sweep_status(k8s)["budgets"][0]["queued"] == 2
        first = "qs-3e10-d01"
        # Kueue admits the first: unsuspended, its pod runs
        await k8s.patch(f"{url}/{first}", json={"spec": {"suspend": False}})
        await k8s.patch(f"{url}/{first}/status", json={"status": {"active": 1}})
        await wait_for(lambda: (counts().get("running"), counts().get("queued")) == (1, 1))
        # evicted for a higher priority: suspended again, the pod checkpointed and went (exit
        # 143, which the Job's podFailurePolicy ignores though `failed` counts it)
        await k8s.patch(f"{url}/{first}", json={"spec": {"suspend": True}})
        await ended_pod(k8s, first, {"status": "preempted"}, 143, suffix="evicted")
        await k8s.patch(f"{url}/{first}/status", json={"status": {"active": 0, "failed": 1}})
        await wait_for(lambda: (counts().get("running"), counts().get("queued")) == (0, 2))
        assert counts()["failed"] == 0
        assert (
            REGISTRY.get_sample_value(
                "isoflop_operator_trial_failed_attempts", {**labels, "trial": "3e10-d01"}
            )
            is None
        )  # no failed attempt: no series
        # admitted again: it resumes and finishes; so does the other
        for name in sorted(jobs(k8s)):
            await k8s.patch(f"{url}/{name}", json={"spec": {"suspend": False}})
            await finish(k8s, name, {"status": "succeeded", "eval_loss": loss_of(trials[name])})
        await wait_for(lambda: counts().get("succeeded") == 2)
    records = {r["id"]: r for r in trial_records(k8s)}
    assert records["3e10-d01"]["phase"] == "Succeeded"
    assert records["3e10-d01"]["attempts"] == 1  # the eviction spent no attempt
    writes = [r for r in k8s if r.action == kmock.action.UPDATE and r.resource == JOBS]
    assert len(writes) == 4 + 4  # the test's own (Kueue's and the Job controller's part) only


def test_preempted_and_disrupted_pods_are_not_counted_as_failed_attempts() -> None:
    """The Job's status.failed counts every failed pod; its podFailurePolicy ignores a trainer
    that checkpointed on SIGTERM (exit 143) and a disrupted pod, and so does the operator's
    attempt count (its status, its failed-attempts metric and the alert on it)."""
    from kubernetes.client import (
        V1ContainerState,
        V1ContainerStateTerminated,
        V1ContainerStatus,
        V1ObjectMeta,
        V1Pod,
        V1PodCondition,
        V1PodStatus,
    )

    from isoflop.cluster.results import ignored_failures

    def pod(phase: str, code: int | None = None, disrupted: bool = False) -> V1Pod:
        statuses = []
        if code is not None:
            term = V1ContainerStateTerminated(exit_code=code)
            statuses.append(
                V1ContainerStatus(
                    name="trainer", image="i", image_id="", ready=False, restart_count=0,
                    state=V1ContainerState(terminated=term),
                )
            )  # fmt: skip
        conditions = [V1PodCondition(type="DisruptionTarget", status="True")] if disrupted else []
        return V1Pod(
            metadata=V1ObjectMeta(labels={"job-name": "j"}),
            status=V1PodStatus(phase=phase, container_statuses=statuses, conditions=conditions),
        )

    assert ignored_failures([pod("Failed", 143), pod("Running")]) == 1  # a preemption
    assert ignored_failures([pod("Failed", 137, disrupted=True)]) == 1  # evicted, drained
    assert ignored_failures([pod("Failed", 1), pod("Failed", 143), pod("Failed", 65)]) == 1
    assert ignored_failures([pod("Failed")]) == 0  # never started: it counts
    assert ignored_failures([pod("Succeeded", 0), pod("Running", 143)]) == 0


async def test_a_confirmation_starts_after_the_final_fit_and_a_restarted_operator_judges_it(
    k8s: Any,
) -> None:
    """spec.confirm on the emulator: the prediction is in the status before its Job exists (the
    emulator's request log shows the order), the grid's Jobs all finished first; its loss, read by
    a new operator, gets its verdict and its Job was created once. SIGKILLs of the operator while
    the confirmation trains are the real API server's test
    (tests/e2e/test_cluster.py::test_a_confirmation_trains_once_after_the_final_fit_through_operator_kills)."""
    from isoflop.sweep.confirm import trial_of

    obj = manifest(parallelism=3, confirm=[1.2e12])
    spec = api.parse_sweep(obj).spec
    trials = {f"qs-{t.id}": t for t in plan(spec).trials}
    confirm_job = "qs-confirm-1p2e12"
    async with running_operator(k8s):
        await k8s.post("/apis/isoflop.dev/v1alpha1/namespaces/default/scalingsweeps", json=obj)
        done: set[str] = set()
        while confirm_job not in jobs(k8s):
            for name in [n for n in jobs(k8s) if n not in done and n != confirm_job]:
                assert name in trials
                await finish(k8s, name, {"status": "succeeded", "eval_loss": loss_of(trials[name])})
                done.add(name)
            await asyncio.sleep(0.05)
        assert done == set(trials)  # every grid trial finished before it was created
    predicted = sweep_status(k8s)["confirmations"][0]
    assert predicted["predictedLoss"] is not None
    assert predicted["lossInterval"]["low"] < predicted["predictedLoss"]
    # the request log: the status holding the prediction was written before the Job was created
    order = [
        ("status", r.data.get("status", {}).get("confirmations") is not None)
        if r.resource == kmock.resource(SWEEPS)
        else ("job", r.data["metadata"]["name"])
        for r in k8s
        if (real_create(r, JOBS))
        or (
            r.action == kmock.action.UPDATE
            and r.resource == kmock.resource(SWEEPS)
            and isinstance(r.data, dict)
        )
    ]
    assert order.index(("status", True)) < order.index(("job", confirm_job))
    assert sweep_status(k8s)["phase"] == "Confirming"
    c = api.Confirmation.model_validate(predicted)
    measured = loss_of(trial_of(spec, c))
    await finish(k8s, confirm_job, {"status": "succeeded", "eval_loss": measured})
    async with running_operator(k8s):
        await wait_for(lambda: sweep_status(k8s).get("phase") == "Succeeded")
    status = sweep_status(k8s)
    (got,) = status["confirmations"]
    assert got["measuredLoss"] == pytest.approx(measured)
    assert got["predictedLoss"] == predicted["predictedLoss"]
    assert got["message"].startswith(f"measured {measured:.4f}, predicted")
    confirmed = next(x for x in status["conditions"] if x["type"] == "Confirmed")
    assert confirmed["status"] == ("True" if got["inside"] else "False")
    creates = Counter(r.data["metadata"]["name"] for r in k8s if real_create(r, JOBS))
    assert creates[confirm_job] == 1
    assert set(creates.values()) == {1}


async def test_the_emulator_answers_on_connections_opened_while_an_operator_ran(k8s: Any) -> None:
    """kopf, when it stops, cancels every task made in its event loop since it started (its
    run_tasks: "the loop is not fully ours"). Had it shared the test's loop, that would take the
    emulator's handlers of keep-alive connections opened meanwhile, and the next request on one of
    them would be read and never answered: the hang of issue 36. The operator runs in a loop of its
    own, so requests on connections opened while it ran are answered after it stops."""
    url = "/apis/isoflop.dev/v1alpha1/namespaces/default/scalingsweeps"
    async with running_operator(k8s):
        # several at once: the client opens connections while the operator runs
        await asyncio.gather(*(k8s.get(url) for _ in range(4)))
    answers = await asyncio.wait_for(asyncio.gather(*(k8s.get(url) for _ in range(4))), 10)
    assert [a.status for a in answers] == [200] * 4


def job_rate(job: dict[str, Any]) -> float:
    """The learning rate a Job's trainer was given (its --config-json)."""
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    return float(json.loads(args[args.index("--config-json") + 1])["learning_rate"])


async def test_the_tuning_stage_runs_first_survives_a_restart_and_sets_the_grids_rates(
    k8s: Any,
) -> None:
    """spec.tuning on the emulator: only tuning Jobs until the stage's law stands (an operator
    restarted in the middle of it creates none twice), then every grid Job trains at the law's
    rate for its own N and D, and the law and each record's rate are in the status."""
    from isoflop.sweep.forecast import RateBasin

    basin = RateBasin(coefficient=0.2, alpha=-0.7, beta=0.3)
    tuning = {
        "budgets": [3e10],
        "rungs": ["d01", "d02", "d03"],
        "learningRates": [5e-4, 2e-3, 8e-3],
    }
    obj = manifest(parallelism=3, tuning={**tuning, "widen": 1})
    spec = api.parse_sweep(obj).spec
    p = plan(spec)
    trials = {f"qs-{t.id}": t for t in (*p.trials, *p.tuning)}

    def loss(name: str, job: dict[str, Any]) -> float:
        t = trials[name]
        return loss_of(t) * basin.factor(t.params, t.tokens, job_rate(job))

    done: set[str] = set()

    async def finish_some(limit: int) -> None:
        for name, job in list(jobs(k8s).items())[:limit]:
            if name not in done:
                await finish(k8s, name, {"status": "succeeded", "eval_loss": loss(name, job)})
                done.add(name)

    async with running_operator(k8s):
        await k8s.post("/apis/isoflop.dev/v1alpha1/namespaces/default/scalingsweeps", json=obj)
        await wait_for(lambda: len(jobs(k8s)) == 3)
        assert all(n.startswith("qs-tune-3e10-") for n in jobs(k8s))
        await finish_some(2)
        await wait_for(lambda: len(jobs(k8s)) == 5)
    async with running_operator(k8s):  # a new operator picks the stage up where it stood
        while sweep_status(k8s).get("phase") != "Succeeded":
            tuning_jobs = [n for n in jobs(k8s) if n.startswith("qs-tune-")]
            if any(not n.startswith("qs-tune-") for n in jobs(k8s)):
                # the grid starts only once every tuning trial it has launched has finished
                assert set(tuning_jobs) <= done, sorted(set(tuning_jobs) - done)
            await finish_some(100)
            await asyncio.sleep(0.05)
    status = sweep_status(k8s)
    assert status["tuning"]["phase"] == "Tuned"
    law = status["tuning"]["law"]
    assert law["form"] == "params"  # one budget: D's exponent is not identified
    assert "tokensExponent" not in law
    creates = Counter(r.data["metadata"]["name"] for r in k8s if real_create(r, JOBS))
    assert set(creates.values()) == {1}  # no Job twice, across the restart
    order = [name for name in creates]  # in the order the operator created them
    first_grid = next(i for i, n in enumerate(order) if not n.startswith("qs-tune-"))
    assert all(n.startswith("qs-tune-") for n in order[:first_grid])
    assert not any(n.startswith("qs-tune-") for n in order[first_grid:])  # no tuning after
    records = {r["id"]: r for r in trial_records(k8s)}
    for name, job in jobs(k8s).items():
        t = trials[name]
        if name.startswith("qs-tune-"):
            assert records[t.id]["kind"] == "tuning"
            assert job_rate(job) == records[t.id]["learningRate"] == t.learning_rate
            continue
        want = law["coefficient"] * t.params ** law["paramsExponent"]
        assert job_rate(job) == pytest.approx(want, rel=5e-3)
        assert records[t.id]["learningRate"] == job_rate(job)
    assert {f"qs-{t.id}" for t in p.trials} <= set(jobs(k8s))
    assert status["counts"]["succeeded"] == len(p.trials)  # tuning trials are no grid points


def job_config(job: dict[str, Any]) -> dict[str, Any]:
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    return dict(json.loads(args[args.index("--config-json") + 1]))


async def test_the_tuning_stage_tunes_batches_after_each_rungs_rate_and_the_grid_trains_at_b_star(
    k8s: Any,
) -> None:
    """spec.tuning.globalBatchSizes on the emulator: a rung's batch Jobs are created only after
    its rate Jobs finished, at its optimum rate; every grid Job trains at the batch law's batch
    (its steps resized) and the law's rate; the batch law is in the status."""
    from isoflop.sweep.forecast import BatchBasin, RateBasin

    rates, batches = RateBasin(coefficient=0.2, alpha=-0.7, beta=0.3), BatchBasin(0.1, 0.5, 0.1)
    tuning = {"budgets": [1.5e10, 3e10], "rungs": ["d01", "d02"],
              "learningRates": [5e-4, 2e-3, 8e-3], "globalBatchSizes": [8, 16, 32],
              "widen": 2}  # fmt: skip
    obj = manifest(parallelism=4, tuning=tuning)
    p = plan(api.parse_sweep(obj).spec)
    trials = {f"qs-{t.id}": t for t in (*p.trials, *p.tuning)}
    done: list[str] = []

    def loss(name: str, job: dict[str, Any]) -> float:
        t, cfg = trials[name], job_config(job)
        tokens = cfg["steps"] * cfg["global_batch_size"] * t.tokens_per_sample
        return (
            loss_of(t)
            * rates.factor(t.params, tokens, cfg["learning_rate"])
            * batches.factor(tokens, cfg["global_batch_size"])
        )

    async with running_operator(k8s):
        await k8s.post("/apis/isoflop.dev/v1alpha1/namespaces/default/scalingsweeps", json=obj)
        while sweep_status(k8s).get("phase") not in ("Succeeded", "Failed"):
            for name, job in list(jobs(k8s).items()):
                if name not in done:
                    await finish(k8s, name, {"status": "succeeded", "eval_loss": loss(name, job)})
                    done.append(name)
            await asyncio.sleep(0.05)
    status = sweep_status(k8s)
    assert status["phase"] == "Succeeded", status.get("conditions")
    stage = status["tuning"]
    assert stage["phase"] == "Tuned", stage["message"]
    law, batch_law = stage["law"], stage["batchLaw"]
    assert batch_law["form"] == "tokens"
    best = {(g["budget"], g["rung"]): g["bestLearningRate"] for g in stage["groups"]}
    created = [r.data["metadata"]["name"] for r in k8s if real_create(r, JOBS)]
    assert len(created) == len(set(created))
    for name in created:
        t, cfg = trials[name], job_config(jobs(k8s)[name])
        if t.tunes == "batch":
            rate_jobs = [n for n in created if trials[n].tunes == "rate"
                         and (trials[n].budget, trials[n].rung) == (t.budget, t.rung)]  # fmt: skip
            assert max(created.index(n) for n in rate_jobs) < created.index(name)
            assert cfg["learning_rate"] == pytest.approx(best[(t.budget, t.rung)], rel=5e-3)
            assert cfg["global_batch_size"] == t.batch_size
        elif t.tunes is None:  # a grid trial: the batch law's batch, then the rate law's rate
            b = cfg["global_batch_size"]
            want = batch_law["coefficient"] * t.tokens ** batch_law["tokensExponent"]
            assert b == min(max(1, round(want)), max(1, t.samples // 20))  # minSteps 20
            assert cfg["steps"] == round(t.samples / b)
    assert sum(trials[n].tunes == "batch" for n in created) >= 4 * 3  # every group's batches
    grid = [n for n in created if trials[n].tunes is None]
    assert len({job_config(jobs(k8s)[n])["global_batch_size"] for n in grid}) > 1
    assert law["form"] == "params-tokens"
