"""A class family on the emulator: the operator runs the model check as a Job in the sweep's
trainer image, plans from its verdict (the real check, run here on the Job's own arguments), and
fails the sweep once, naming the rung, when the class refuses one."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import kmock

from isoflop import api
from isoflop.cluster.modeljob import checked_spec
from isoflop.sweep.families import check_request
from isoflop.sweep.plan import plan
from tests.operator.conftest import running_operator, wait_for
from tests.operator.emulator import SWEEPS, finish
from tests.operator.test_operator import jobs, manifest, run_to_end, sweep_status

SWEEP = (kmock.resource(SWEEPS), "default", "qs")
URL = "/apis/isoflop.dev/v1alpha1/namespaces/default/scalingsweeps"
MODEL = {
    "family": "diffusers",
    "transformer": "SD3Transformer2DModel",
    "depths": [1, 2, 3, 4],
    "widthPerDepth": 32,
    "headDim": 32,
    "arguments": {"patch_size": 4},
}


def class_manifest(**model: Any) -> dict[str, Any]:
    resources = {"image": "team/trainer:1", "nodeSelector": {"pool": "gpu"},
                 "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}]}  # fmt: skip
    return manifest(model={**MODEL, **model}, resources=resources)


def run_check(job: dict[str, Any], tmp: Path) -> dict[str, Any]:
    """What the Job's pod would leave: the real check on the Job's arguments, its termination
    message."""
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["isoflop-train"]
    log = tmp / "termination-log"
    log.write_text("")
    subprocess.run(
        [sys.executable, "-m", "isoflop_trainer.cli", *container["args"],
         "--termination-log", str(log)],
        capture_output=True, check=False, timeout=300,
    )  # fmt: skip
    return dict(json.loads(log.read_text()))


async def test_a_class_family_is_planned_from_its_model_check_job(k8s: Any, tmp_path: Path) -> None:
    obj = class_manifest()
    async with running_operator(k8s):
        await k8s.post(URL, json=obj)
        await wait_for(lambda: "qs-model-check" in jobs(k8s))
        job = jobs(k8s)["qs-model-check"]
        pod = job["spec"]["template"]["spec"]
        assert pod["containers"][0]["image"] == "team/trainer:1"  # the user's image runs it
        assert pod["automountServiceAccountToken"] is False
        assert pod["nodeSelector"] == {"pool": "gpu"}  # where the sweep's pods may run
        assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists"}]
        assert "nvidia.com/gpu" not in pod["containers"][0]["resources"]["limits"]
        requests, digest = check_request(api.parse_sweep(obj).spec)
        assert job["metadata"]["labels"]["isoflop.dev/request"] == digest
        assert json.loads(pod["containers"][0]["args"][1]) == requests
        await asyncio.sleep(0.5)  # several reconciles: still only the check
        assert list(jobs(k8s)) == ["qs-model-check"]
        status = sweep_status(k8s)
        assert status["phase"] == "Pending"
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert (ready["reason"], ready["message"]) == (
            "CheckingModel",
            "measuring 4 rungs of SD3Transformer2DModel before any trial",
        )
        said = run_check(job, tmp_path)
        await finish(k8s, "qs-model-check", said)
        # the check, then trials within parallelism; the status that says the check is ready is
        # patched after the reconcile that creates their Jobs, so both are waited for
        await wait_for(
            lambda: (
                len(jobs(k8s)) == 3
                and (sweep_status(k8s).get("modelCheck") or {}).get("ready") is True
            )
        )
        check = api.ModelCheckStatus.model_validate(sweep_status(k8s)["modelCheck"])
        assert check.ready is True
        assert list(check.rungs) == ["d01", "d02", "d03", "d04"]
        assert check.rungs["d01"].params < check.rungs["d04"].params
        planned = plan(checked_spec(api.parse_sweep(obj).spec, check))
        trials = {f"qs-{t.id}": t for t in planned.trials}
        first = jobs(k8s)["qs-3e10-d01"]["spec"]["template"]["spec"]["containers"][0]
        config = json.loads(next(a for a in first["args"] if a.startswith("{")))
        assert config["model"]["transformer"] == "SD3Transformer2DModel"
        assert config["model"]["measure"]["params"] == check.rungs["d01"].params
        await run_to_end(k8s, trials, {"qs-model-check"})
    status = sweep_status(k8s)
    assert status["progress"] == f"{len(trials)}/{len(trials)}"
    law = status["fit"]["laws"]["params"]
    assert law["exponentInterval"]["low"] < law["exponent"] < law["exponentInterval"]["high"]
    assert status["modelCheck"]["ready"] is True  # kept by every status patch since


async def test_a_rung_the_class_refuses_fails_the_sweep_once_and_a_new_ladder_checks_again(
    k8s: Any, tmp_path: Path
) -> None:
    obj = class_manifest(
        depths=[],
        configs=[
            {"name": "ok", "depth": 1, "width": 32},
            {"name": "typo", "depth": 2, "width": 64, "arguments": {"num_layer": 3}},
        ],
    )
    async with running_operator(k8s):
        await k8s.post(URL, json=obj)
        await wait_for(lambda: "qs-model-check" in jobs(k8s))
        said = run_check(jobs(k8s)["qs-model-check"], tmp_path)
        assert (said["status"], said["rung"]) == ("failed", "typo")
        await finish(k8s, "qs-model-check", said, exit_code=65)
        await wait_for(lambda: sweep_status(k8s).get("phase") == "Failed")
        first = next(c for c in sweep_status(k8s)["conditions"] if c["type"] == "Failed")
        await asyncio.sleep(0.5)  # later reconciles keep it so, write it once, start nothing
        failed = next(c for c in sweep_status(k8s)["conditions"] if c["type"] == "Failed")
        assert failed == first
        assert list(jobs(k8s)) == ["qs-model-check"]
        assert failed["reason"] == "InvalidSpec"
        assert failed["message"].startswith(
            "spec.model.configs[1] ('typo'): SD3Transformer2DModel takes no argument 'num_layer'"
        )
        assert sweep_status(k8s)["modelCheck"]["ready"] is False
        # the ladder mended: the old verdict is not this ladder's, so the check runs again
        fixed = {**obj["spec"]["model"], "configs": obj["spec"]["model"]["configs"][:1]}
        await k8s.patch(f"{URL}/qs", json={"spec": {"model": fixed}})
        _, digest = check_request(api.parse_spec({**obj["spec"], "model": fixed}))

        def rechecking() -> bool:
            job = jobs(k8s).get("qs-model-check")
            return job is not None and job["metadata"]["labels"]["isoflop.dev/request"] == digest

        await wait_for(rechecking)
        await wait_for(lambda: sweep_status(k8s).get("phase") == "Pending")


async def test_a_model_check_job_that_never_says_fails_the_sweep_with_the_jobs_reason(
    k8s: Any,
) -> None:
    async with running_operator(k8s):
        await k8s.post(URL, json=class_manifest())
        await wait_for(lambda: "qs-model-check" in jobs(k8s))
        failed = {"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
                  "message": "Job was active longer than specified deadline"}  # fmt: skip
        await k8s.patch(
            "/apis/batch/v1/namespaces/default/jobs/qs-model-check/status",
            json={"status": {"failed": 1, "conditions": [failed]}},
        )
        await wait_for(lambda: sweep_status(k8s).get("phase") == "Failed")
        assert list(jobs(k8s)) == ["qs-model-check"]
    ready = next(c for c in sweep_status(k8s)["conditions"] if c["type"] == "Ready")
    assert (ready["reason"], ready["message"]) == (
        "InvalidSpec",
        "spec.model: the model check Job failed: Job was active longer than specified deadline",
    )
