"""A trial's MLflow run, against a real tracking server: what it logs, how a resumed attempt
continues the same run, and what a server that is down or refuses costs (values, never the
trial)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from isoflop_trainer.components.tracking import KEY_TAG, Tracker, trial_params
from tests.net import Forwarder
from tests.trainer.helpers import env, free_port, run_trial, tiny, train_command, wait_for_file


def client(url: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=url)


def runs_with_key(url: str, experiment: str, key: str) -> list[Any]:
    c = client(url)
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return list(c.search_runs([exp.experiment_id], filter_string=f"tags.`{KEY_TAG}` = '{key}'"))


def logged_loss(url: str, experiment: str, key: str) -> bool:
    runs = runs_with_key(url, experiment, key)
    return bool(runs and history(url, runs[0].info.run_id, "train_loss"))


def history(url: str, run_id: str, metric: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in client(url).get_metric_history(run_id, metric)]


def test_a_preempted_trial_resumes_into_the_run_it_began(
    tmp_path: Path, mlflow_server: str
) -> None:
    key = "uid-1/trial/b1-d2"
    cfg = tiny(
        tmp_path / "run",
        steps=800,
        eval_samples=8,
        checkpoint=str(tmp_path / "ckpt"),
        checkpoint_every=100,
        tracking_uri=mlflow_server,
        tracking_experiment="trainer-resume",
        tracking_tags={KEY_TAG: key, "isoflop.uid": "uid-1"},
    )
    proc = subprocess.Popen(train_command(cfg), env=env(), stderr=subprocess.PIPE, text=True)
    wait_for_file(proc, tmp_path / "ckpt" / "checkpoint.pt", 120)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143
    stopped = json.loads((tmp_path / "run" / "result.json").read_text())
    assert stopped["status"] == "preempted"
    (first,) = runs_with_key(mlflow_server, "trainer-resume", key)
    assert first.info.status == "RUNNING"  # preempted: it goes on
    assert stopped["tracking_run_id"] == first.info.run_id

    code, result = run_trial(cfg)
    assert code == 0
    (run,) = runs_with_key(mlflow_server, "trainer-resume", key)  # never a second run
    assert run.info.run_id == first.info.run_id
    assert run.info.status == "FINISHED"
    assert result["tracking_run_id"] == run.info.run_id
    assert result["tracking_dropped"] == 0
    assert result["tracking"]["warnings"] == []
    steps = [s for s, _ in history(mlflow_server, run.info.run_id, "train_loss")]
    assert min(steps) < stopped["step"] < max(steps) == 800  # both attempts, one run
    # the run says what the trial is and what it measured
    assert run.data.params["N"] == str(result["params"])
    assert run.data.params["D"] == str(result["tokens"])
    assert run.data.params["flops"] == str(result["flops"])
    assert run.data.params == {**{k: str(v) for k, v in trial_params(cfg).items()}}
    assert run.data.metrics["eval_loss"] == pytest.approx(result["eval_loss"])
    assert run.data.tags["isoflop.trial"] == "t1"
    assert run.data.tags["isoflop.uid"] == "uid-1"


def test_a_tracker_cut_mid_trial_costs_values_not_the_trial(
    tmp_path: Path, mlflow_server: str
) -> None:
    relay = Forwarder("127.0.0.1", int(mlflow_server.rsplit(":", 1)[1]))
    cfg = tiny(
        tmp_path,
        steps=1000,
        eval_samples=8,
        progress=str(tmp_path / "progress.json"),
        tracking_uri=f"http://127.0.0.1:{relay.port}",
        tracking_experiment="trainer-cut",
        tracking_tags={KEY_TAG: "uid-2/trial/t1"},
        tracking_flush_seconds=30,
    )
    proc = subprocess.Popen(train_command(cfg), env=env(), stderr=subprocess.PIPE, text=True)
    wait_for_file(proc, tmp_path / "progress.json", 120)
    # the run is made and values flow; then the server goes away for the rest of the trial
    deadline = time.time() + 120
    while not logged_loss(mlflow_server, "trainer-cut", "uid-2/trial/t1"):
        assert proc.poll() is None
        assert time.time() < deadline
        time.sleep(0.2)
    relay.cut()
    assert proc.wait(timeout=300) == 0
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["status"] == "succeeded"
    (run,) = runs_with_key(mlflow_server, "trainer-cut", "uid-2/trial/t1")
    logged = len(history(mlflow_server, run.info.run_id, "train_loss"))
    record = result["tracking"]
    assert record["run_id"] == run.info.run_id
    assert record["dropped"] > 0
    assert "not logged" in record["warnings"][0]
    # what the server holds is what the tracker says it took; the rest is counted as dropped
    assert 0 < logged < 1000 // cfg.log_every
    assert run.info.status == "RUNNING"  # its end never reached the server either


def test_a_refused_batch_is_dropped_and_the_rest_logged(mlflow_server: str) -> None:
    tracker = Tracker(mlflow_server, "trainer-refused", "uid-3/refused", flush_seconds=60)
    tracker.params({"lr": 0.1})
    tracker.metrics(1, {"loss": 1.0})
    assert tracker.close(None).dropped == 0
    again = Tracker(mlflow_server, "trainer-refused", "uid-3/refused", flush_seconds=30)
    again.params({"lr": 0.2})  # MLflow refuses to change a logged param (HTTP 400)
    record = again.close()
    assert record.run_id == tracker.run_id  # found again by its key
    assert record.dropped == 1
    assert "refused 4 times" in record.warnings[0]
    later = Tracker(mlflow_server, "trainer-refused", "uid-3/refused", flush_seconds=30)
    later.metrics(2, {"loss": 0.5})
    assert later.close().dropped == 0
    assert history(mlflow_server, tracker.run_id or "", "loss") == [(1, 1.0), (2, 0.5)]


def test_a_tracker_that_is_down_drops_what_it_holds_and_says_so() -> None:
    tracker = Tracker(f"http://127.0.0.1:{free_port()}", "nowhere", "uid-4/t")
    tracker.params({"N": 1})
    for step in range(100):
        tracker.metrics(step, {"loss": 1.0, "mfu": None})
    record = tracker.close()
    assert record.run_id is None
    assert record.dropped == 102  # 100 values, a param and the run's end
    assert "no run was made" in record.warnings[0]
    assert "(last error: experiments/get-by-name: Connection refused)" in record.warnings[0]
