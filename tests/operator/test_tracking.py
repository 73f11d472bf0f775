"""The operator's side of MLflow, on the kmock emulator and a real `mlflow server`: each trial's
Job carries what its trainer needs to log into its budget's run, the operator logs the budgets'
runs and the fitted laws, the status links the experiment and says what the pods could not log.
The trials' own runs come from real pods: tests/e2e/test_pods.py."""

from __future__ import annotations

import json
import math
import uuid
from typing import Any

import kmock
from mlflow.tracking import MlflowClient

from isoflop import api
from isoflop.sweep.plan import plan
from tests.operator.conftest import running_operator, wait_for
from tests.operator.emulator import finish
from tests.operator.test_operator import jobs, loss_of, manifest, sweep_status

EVENTS = kmock.resource("v1/events")


def config_of(job: dict[str, Any]) -> dict[str, Any]:
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    return dict(json.loads(args[args.index("--config-json") + 1]))


async def test_a_tracked_sweep_logs_its_budgets_and_laws_and_links_the_experiment(
    k8s: Any, mlflow_server: str
) -> None:
    experiment = f"isoflop/operator-{uuid.uuid4().hex[:8]}"
    mlflow = {"trackingUri": mlflow_server, "experiment": experiment, "credentialsSecret": "mf"}
    obj = manifest(parallelism=4, tracking={"mlflow": mlflow})
    sweep = api.parse_sweep(obj)
    trials = {f"qs-{t.id}": t for t in plan(sweep.spec).trials}
    configs: dict[str, dict[str, Any]] = {}
    async with running_operator(k8s):
        resp = await k8s.post(
            "/apis/isoflop.dev/v1alpha1/namespaces/default/scalingsweeps", json=obj
        )
        assert resp.status == 200
        while len(configs) < len(trials):
            await wait_for(
                lambda: set(jobs(k8s)) - set(configs) or sweep_status(k8s).get("phase") == "Failed"
            )
            for name, job in jobs(k8s).items():
                if name in configs:
                    continue
                configs[name] = config_of(job)
                container = job["spec"]["template"]["spec"]["containers"][0]
                assert container["envFrom"] == [{"secretRef": {"name": "mf"}}]
                # the first trial's pod could not log 7 values (the tracker was down)
                said = {"tracking_dropped": 7} if name == "qs-3e10-d01" else {}
                result = {"status": "succeeded", "eval_loss": loss_of(trials[name]), **said}
                await finish(k8s, name, result)
        await wait_for(lambda: sweep_status(k8s).get("phase") == "Succeeded", timeout=60)
        await wait_for(lambda: (sweep_status(k8s).get("tracking") or {}).get("experimentId"))
    status = sweep_status(k8s)
    client = MlflowClient(tracking_uri=mlflow_server)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None
    runs = client.search_runs([exp.experiment_id], max_results=100)
    by_kind: dict[str, list[Any]] = {}
    for r in runs:
        by_kind.setdefault(r.data.tags["isoflop.kind"], []).append(r)
    assert set(by_kind) == {"budget", "fit"}  # the trials' runs are their pods'
    budgets = {r.data.tags["isoflop.budget"]: r for r in by_kind["budget"]}
    assert sorted(budgets) == sorted(f"{b:g}" for b in sweep.spec.budgets)
    for r in runs:
        assert r.info.status == "FINISHED"
        assert r.data.tags["isoflop.uid"] == "uid-qs"
        assert r.data.tags["isoflop.namespace"] == "default"
    # each trial logs into its budget's run, found by key if the trial starts before it exists
    for name, cfg in configs.items():
        t = trials[name]
        assert cfg["tracking_uri"] == mlflow_server
        assert cfg["tracking_experiment"] == experiment
        tags = cfg["tracking_tags"]
        assert tags["isoflop.key"] == f"uid-qs/trial/{t.id}"
        assert tags["isoflop.parent"] == f"uid-qs/budget/{t.budget:g}"
        assert tags["isoflop.namespace"] == "default"
        parent = cfg["tracking_parent"]
        assert parent in (None, budgets[f"{t.budget:g}"].info.run_id)
    # the fitted laws' run: the status's exponents at the last refit's step, fit.json beside
    (fit_run,) = by_kind["fit"]
    law = status["fit"]["laws"]["params"]
    assert fit_run.data.metrics["params_exponent"] == law["exponent"]
    assert fit_run.data.metrics["params_exponent_low"] == law["exponentInterval"]["low"]
    assert fit_run.data.metrics["final"] == 1.0
    (predicted,) = [p for p in status["fit"]["predictions"] if p["budget"] == 1e12]
    assert fit_run.data.metrics["predicted_params_at_1e12"] == predicted["params"]["value"]
    history = client.get_metric_history(fit_run.info.run_id, "params_exponent")
    steps = [m.step for m in history]
    assert steps == sorted(steps)
    assert len(set(steps)) == len(steps)
    assert steps[-1] == status["tracking"]["refits"]
    artifacts = [a.path for a in client.list_artifacts(fit_run.info.run_id)]
    assert artifacts == ["fit.json"]
    fitted = json.loads(
        open(client.download_artifacts(fit_run.info.run_id, "fit.json")).read()  # noqa: SIM115
    )
    assert math.isclose(fitted["laws"]["params"]["exponent"], law["exponent"])
    for b in status["fit"]["budgetFits"]:
        run = client.get_run(budgets[f"{b['budget']:g}"].info.run_id)
        assert run.data.metrics["loss_opt"] == b["lossOpt"]
    tracking = status["tracking"]
    assert tracking["experiment"] == experiment
    said = [
        r.data["message"] for r in k8s
        if r.action == kmock.action.CREATE and r.resource == EVENTS
        and r.data.get("reason") == "Tracked"
    ]  # fmt: skip
    assert said == [f"MLflow experiment {experiment!r}: {tracking['experimentUrl']}"]  # once
    assert tracking["experimentUrl"] == f"{mlflow_server}/#/experiments/{exp.experiment_id}"
    assert tracking["fitRunId"] == fit_run.info.run_id
    assert tracking["notLogged"] == [
        "trial 3e10-d01: 7 values not logged (the tracker was down or refused)"
    ]


async def test_an_untracked_sweep_gives_its_trials_no_tracker(k8s: Any) -> None:
    """No server named and no installation default: no tracking fields, no status.tracking."""
    async with running_operator(k8s):
        resp = await k8s.post(
            "/apis/isoflop.dev/v1alpha1/namespaces/default/scalingsweeps", json=manifest()
        )
        assert resp.status == 200
        await wait_for(lambda: jobs(k8s))
        cfg = config_of(next(iter(jobs(k8s).values())))
    assert cfg.get("tracking_uri") is None
    assert "tracking" not in sweep_status(k8s)


def test_a_sweep_moved_to_another_server_or_untracked_stops_its_old_trackers() -> None:
    """One SweepTracking per uid: a spec that names another server replaces it (the old one's
    threads stopped, not left running), and one that drops tracking forgets it."""
    from isoflop.cluster import tracking

    def down(uri: str) -> Any:
        raise OSError(f"{uri} is down")

    spec = api.parse_sweep(manifest(tracking={"mlflow": {"trackingUri": "http://a:5000"}})).spec
    first = tracking.tracking_for("uid-m", "qs", "default", spec, {}, {}, client=down)
    assert first is not None
    assert tracking.tracking_for("uid-m", "qs", "default", spec, {}, {}, client=down) is first
    moved = spec.model_copy(update={"tracking": api.parse_sweep(manifest(tracking={
        "mlflow": {"trackingUri": "http://b:5000"}})).spec.tracking})  # fmt: skip
    second = tracking.tracking_for("uid-m", "qs", "default", moved, {}, {}, client=down)
    assert second is not None
    assert second is not first
    assert second.uri == "http://b:5000"
    assert all(not t._thread.is_alive() for t in first.trackers)  # stopped
    untracked = api.parse_sweep(manifest()).spec
    assert tracking.tracking_for("uid-m", "qs", "default", untracked, {}, {}, client=down) is None
    assert all(not t._thread.is_alive() for t in second.trackers)
    assert "uid-m" not in tracking._open
