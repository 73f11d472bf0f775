"""A real MLflow tracking server for the tests (SQLite store, local artifact root); a test that
takes it away from its clients mid-run cuts a `tests.net.Forwarder` in front of it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.trainer.helpers import free_port


class MlflowServer:
    """`mlflow server` on `host`, in its own process group; stopped by `stop`."""

    def __init__(self, root: Path, host: str = "127.0.0.1") -> None:
        self.root, self.host = root, host
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 180) -> MlflowServer:
        self.root.mkdir(parents=True, exist_ok=True)
        log = open(self.root / "server.log", "wb")  # noqa: SIM115 (kept open for the server)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--backend-store-uri",
                f"sqlite:///{self.root / 'mlflow.db'}",
                "--artifacts-destination",
                str(self.root / "artifacts"),
                "--host",
                self.host,
                "--port",
                str(self.port),
                "--workers",
                "1",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # no job runner (its eight huey workers serve GenAI jobs, none of a sweep's)
            env={
                **os.environ,
                "MLFLOW_TRACKING_URI": "",
                "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            },
        )
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"mlflow server exited: {(self.root / 'server.log').read_text()[-2000:]}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"mlflow server did not answer on {self.url} in {timeout:.0f} s")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def experiment_runs(url: str, experiment: str) -> tuple[str, list[Any]]:
    """The experiment's id and every run in it."""
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=url)
    exp = c.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment}"
    return exp.experiment_id, list(c.search_runs([exp.experiment_id], max_results=1000))


def assert_sweep_tracked(url: str, run_dir: Path, experiment: str) -> dict[str, Any]:
    """A finished local sweep's experiment is its run directory: one run per trial of
    trials.csv, equal to its row and nested under its budget's run, and the fitted laws' run
    with the report, the trial table and the plots. Returns the runs by kind."""
    import csv
    import json

    import pytest
    from mlflow.tracking import MlflowClient

    exp_id, runs = experiment_runs(url, experiment)
    by_kind: dict[str, list[Any]] = {}
    for r in runs:
        by_kind.setdefault(r.data.tags["isoflop.kind"], []).append(r)
    rows = list(csv.DictReader((run_dir / "trials.csv").open()))
    names = [r.info.run_name for r in by_kind["trial"]]
    assert sorted(names) == sorted(row["id"] for row in rows)  # one run each, never two
    budgets = {r.data.tags["isoflop.budget"]: r.info.run_id for r in by_kind["budget"]}
    assert sorted(budgets) == sorted({f"{float(row['budget']):g}" for row in rows})
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
    assert tracking["experiment"] == experiment
    assert tracking["experimentUrl"] == f"{url}/#/experiments/{exp_id}"
    assert tracking["notLogged"] == []
    (fit,) = by_kind["fit"]
    assert tracking["fitRunId"] == fit.info.run_id
    laws = status["fit"]["laws"]
    assert fit.data.metrics["params_exponent"] == pytest.approx(laws["params"]["exponent"])
    assert fit.data.metrics["params_exponent_low"] == pytest.approx(
        laws["params"]["exponentInterval"]["low"]
    )
    c = MlflowClient(tracking_uri=url)
    assert {"report.md", "trials.csv", "plots"} <= {
        a.path for a in c.list_artifacts(fit.info.run_id)
    }
    plots = {a.path for a in c.list_artifacts(fit.info.run_id, "plots")}
    assert {"plots/isoflop.png", "plots/laws.png"} <= plots
    for budget in status["fit"]["budgetFits"]:
        parent = c.get_run(budgets[f"{budget['budget']:g}"])
        assert parent.data.metrics["loss_opt"] == pytest.approx(budget["lossOpt"])
    return by_kind
