"""`isoflop run` into a real MLflow server: the sweep is an experiment, each budget a parent run,
each trial a child run equal to its row of trials.csv, the fitted laws a run with the report and
plots; a server that goes away mid-sweep costs what it did not take, said in the status, never
the sweep."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.test_run import write_tiny
from tests.net import Forwarder


def sweep_runs(url: str, experiment: str) -> tuple[str, list[Any]]:
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=url)
    exp = c.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment}"
    return exp.experiment_id, list(c.search_runs([exp.experiment_id], max_results=1000))


def isoflop_run(manifest: Path, run_dir: Path, uri: str, **kw: Any) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "isoflop.cli", "run", str(manifest), "--run-dir", str(run_dir)]
    env = {**__import__("os").environ, "MLFLOW_TRACKING_URI": uri}
    return subprocess.Popen(
        [*cmd, "--plain"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw
    )


def test_a_local_sweep_is_an_experiment_whose_trial_runs_equal_trials_csv(
    tmp_path: Path, mlflow_server: str
) -> None:
    from mlflow.tracking import MlflowClient

    manifest = write_tiny(tmp_path / "tiny.yaml")
    run_dir = tmp_path / "run"
    proc = isoflop_run(manifest, run_dir, mlflow_server)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]

    exp_id, runs = sweep_runs(mlflow_server, "isoflop/tiny")
    by_kind: dict[str, list[Any]] = {}
    for r in runs:
        by_kind.setdefault(r.data.tags["isoflop.kind"], []).append(r)
    rows = list(csv.DictReader((run_dir / "trials.csv").open()))
    assert sorted(r.info.run_name for r in by_kind["trial"]) == sorted(row["id"] for row in rows)
    budgets = {r.data.tags["isoflop.budget"]: r.info.run_id for r in by_kind["budget"]}
    assert sorted(budgets) == ["1e+11", "3e+10"]
    trials = {r.info.run_name: r for r in by_kind["trial"]}
    for row in rows:  # every trial's run is its row: what it is, what it measured, its parent
        run = trials[row["id"]]
        assert run.info.status == "FINISHED"
        assert run.data.params["N"] == row["params"]
        assert run.data.params["D"] == row["tokens"]
        assert run.data.params["steps"] == row["steps"]
        assert float(run.data.params["C"]) == float(row["budget"])
        assert run.data.metrics["eval_loss"] == pytest.approx(float(row["loss"]), rel=1e-12)
        assert run.data.metrics["eval_loss_se"] == pytest.approx(float(row["loss_se"]))
        assert run.data.metrics["step"] == float(row["steps"])
        assert run.data.tags["mlflow.parentRunId"] == budgets[f"{float(row['budget']):g}"]

    status = json.loads((run_dir / "status.json").read_text())
    tracking = status["tracking"]
    assert tracking["experiment"] == "isoflop/tiny"
    assert tracking["experimentUrl"] == f"{mlflow_server}/#/experiments/{exp_id}"
    assert tracking["notLogged"] == []
    assert f"MLflow experiment 'isoflop/tiny': {tracking['experimentUrl']}" in out
    (fit,) = by_kind["fit"]
    assert tracking["fitRunId"] == fit.info.run_id
    laws = status["fit"]["laws"]
    assert fit.data.metrics["params_exponent"] == pytest.approx(laws["params"]["exponent"])
    assert fit.data.metrics["params_exponent_low"] == pytest.approx(
        laws["params"]["exponentInterval"]["low"]
    )
    c = MlflowClient(tracking_uri=mlflow_server)
    artifacts = {a.path for a in c.list_artifacts(fit.info.run_id)}
    assert {"report.md", "trials.csv", "plots"} <= artifacts
    plots = {a.path for a in c.list_artifacts(fit.info.run_id, "plots")}
    assert {"plots/isoflop.png", "plots/laws.png"} <= plots
    for budget in status["fit"]["budgetFits"]:
        parent = c.get_run(budgets[f"{budget['budget']:g}"])
        assert parent.data.metrics["loss_opt"] == pytest.approx(budget["lossOpt"])


def test_a_tracker_gone_mid_sweep_costs_what_it_did_not_take_never_the_sweep(
    tmp_path: Path, mlflow_server: str
) -> None:
    manifest = write_tiny(tmp_path / "tiny.yaml")
    doc = yaml.safe_load(manifest.read_text())
    doc["metadata"]["name"] = "cut"
    doc["spec"]["budgets"] = [1e10, 3e10]
    doc["spec"]["training"]["minSteps"] = 10
    manifest.write_text(yaml.safe_dump(doc))
    relay = Forwarder("127.0.0.1", int(mlflow_server.rsplit(":", 1)[1]))
    run_dir = tmp_path / "run"
    proc = isoflop_run(manifest, run_dir, f"http://127.0.0.1:{relay.port}")
    deadline = time.time() + 300
    while time.time() < deadline:  # the first trial finished: the server goes away
        assert proc.poll() is None, proc.communicate()
        saved = run_dir / "state.json"
        state = json.loads(saved.read_text()) if saved.exists() else {}
        if any(s["phase"] == "Succeeded" for s in state.get("trials", {}).values()):
            break
        time.sleep(0.2)
    relay.cut()
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    status = json.loads((run_dir / "status.json").read_text())
    assert status["phase"] == "Succeeded"
    assert status["progress"] == "6/6"
    not_logged = status["tracking"]["notLogged"]
    # the trials that trained after the cut, and the sweep's own runs, say what they lost
    _, runs = sweep_runs(mlflow_server, "isoflop/cut")
    finished = {r.info.run_name for r in runs if r.info.status == "FINISHED"}
    lost = sorted(t["id"] for t in status["trials"] if t["id"] not in finished)
    assert lost, "every trial's run ended before the cut"
    for t in status["trials"]:
        said = [line for line in not_logged if line.startswith(f"trial {t['id']}: ")]
        assert bool(said) == (t["id"] not in finished), (t["id"], not_logged)
    assert any(line.startswith("run cut: fitted laws: ") for line in not_logged)
    assert "Not logged in MLflow" in (run_dir / "report.md").read_text()
    assert "isoflop: not logged in MLflow: trial " in out
