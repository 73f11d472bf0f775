"""`isoflop run` and `forecast`: simulated grids, a real local sweep, interrupt and resume."""

from __future__ import annotations

import fcntl
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from isoflop import api
from isoflop.local.backends import SimulatedBackend
from isoflop.local.runner import Display, Run
from isoflop.sweep.forecast import Law, forecast
from tests.mlflow_server import assert_sweep_tracked

ROOT = Path(__file__).resolve().parents[2]


def paper(bootstrap: int = 200) -> api.ScalingSweep:
    sweep = api.load_sweep(ROOT / "examples" / "paper-in-context.yaml")
    spec = sweep.spec.model_copy(
        update={
            "fit": sweep.spec.fit.model_copy(update={"bootstrap": bootstrap, "method": "parabola"})
        }
    )
    return sweep.model_copy(update={"spec": spec})


def test_a_simulated_paper_grid_recovers_the_simulated_exponents(tmp_path: Path) -> None:
    law = Law()
    run = Run(paper(), tmp_path, SimulatedBackend(law, noise=0.005, seed=0))
    decision = run.run(Display(stream=io.StringIO(), live=False))
    assert decision.phase == "Succeeded"
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["phase"] == "Succeeded"
    assert status["progress"] == "84/84"
    laws = status["fit"]["laws"]
    for name, true in (("params", law.params_exponent), ("tokens", 1 - law.params_exponent)):
        interval = laws[name]["exponentInterval"]
        assert interval["low"] <= true <= interval["high"], (name, true, interval)
    assert all(t["source"] == "simulated" for t in status["trials"] if t["phase"] == "Succeeded")
    assert len((tmp_path / "trials.csv").read_text().splitlines()) == 85
    assert "## Fitted laws" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "plots" / "laws.png").stat().st_size > 10_000


def test_a_finished_run_shows_its_stored_fit_and_ctrl_c_stops_a_fit_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import threading

    import isoflop.local.runner

    sweep = paper(bootstrap=100)
    first = Run(sweep, tmp_path, SimulatedBackend(Law(), noise=0.005, seed=0))
    assert first.run(Display(stream=io.StringIO(), live=False)).phase == "Succeeded"
    report = (tmp_path / "report.md").read_text()
    assert first.state.fit_text is not None
    assert first.state.fit_text in report

    def no_refit(*args: object, **kwargs: object) -> None:
        raise AssertionError("a finished run was fitted again")

    monkeypatch.setattr(isoflop.local.runner, "fit", no_refit)
    again = Run(sweep, tmp_path, SimulatedBackend(Law(), noise=0.005, seed=0))
    assert again.run(Display(stream=io.StringIO(), live=False)).phase == "Succeeded"
    assert again.state.fit_text == first.state.fit_text
    assert (tmp_path / "report.md").read_text().count(first.state.fit_text) == 1

    # a fit that would take a minute: Ctrl-C ends it within a second, nothing trained is lost
    def slow_fit(*args: object, **kwargs: object) -> None:
        time.sleep(60)

    monkeypatch.setattr(isoflop.local.runner, "fit", slow_fit)
    fresh = tmp_path / "fresh"
    run = Run(sweep, fresh, SimulatedBackend(Law(), noise=0.005, seed=0))
    threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT)).start()
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run.run(Display(stream=io.StringIO(), live=False))
    assert time.monotonic() - start < 3.0
    saved = json.loads((fresh / "state.json").read_text())
    assert sum(t["phase"] == "Succeeded" for t in saved["trials"].values()) >= 14


def test_forecast_reports_interval_widths_and_what_helps() -> None:
    f = forecast(paper().spec, Law(), noise=0.01, runs=6, bootstrap=100)
    params = f.exponents[0]
    assert params.true == pytest.approx(Law().params_exponent, abs=2e-4)  # whole steps
    assert params.interval_width > 0
    assert abs(params.mean - params.true) < 0.05
    variants = {v.label: v for v in f.variants}
    assert "add budget 1.8e+19" in variants
    bigger = variants["add budget 1.8e+19"]
    assert bigger.width < 1.0  # a larger budget narrows the interval
    assert bigger.compute == pytest.approx(1 + 1.8e19 * 14 / f.compute, rel=0.05)  # 14 rungs more


def write_tiny(path: Path) -> Path:
    manifest = yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text())
    manifest["metadata"]["name"] = "tiny"
    model = manifest["spec"]["model"]
    model.pop("configs")
    model.update({"depths": [1, 2, 3], "widthPerDepth": 32, "headDim": 32})
    manifest["spec"]["budgets"] = [3e10, 1e11]  # small enough to be quick, big enough for a minimum
    manifest["spec"]["training"].update({"minSteps": 20, "evalSamples": 64})
    manifest["spec"]["parallelism"] = 2
    manifest["spec"]["fit"] = {"bootstrap": 100, "method": "parabola"}
    path.write_text(yaml.safe_dump(manifest))
    return path


def isoflop(*args: str) -> list[str]:
    return [sys.executable, "-m", "isoflop.cli", *args]


def test_a_local_sweep_survives_an_interrupt_and_never_retrains(
    tmp_path: Path, mlflow_server: str
) -> None:
    """Interrupted and resumed: no trial trains twice, and the sweep's MLflow experiment (a real
    server) still has one run per trial, equal to trials.csv (the interrupted trials resumed
    into the runs they began)."""
    manifest = write_tiny(tmp_path / "tiny.yaml")
    run_dir = tmp_path / "run"
    cmd = isoflop("run", str(manifest), "--run-dir", str(run_dir), "--plain")
    tracked = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server}
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=tracked
    )
    deadline = time.time() + 300
    finished: dict[str, float] = {}
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        state = (
            json.loads((run_dir / "state.json").read_text())
            if (run_dir / "state.json").exists()
            else {}
        )
        finished = {
            tid: s["loss"]
            for tid, s in state.get("trials", {}).items()
            if s["phase"] == "Succeeded"
        }
        if len(finished) >= 2:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert "Run the same command again to resume" in err
    state = json.loads((run_dir / "state.json").read_text())
    before = {tid: s["loss"] for tid, s in state["trials"].items() if s["phase"] == "Succeeded"}
    assert len(before) >= 2
    assert not [s for s in state["trials"].values() if s["phase"] in ("Starting", "Running")]
    for log in run_dir.glob("trials/*/log.txt"):  # stopped trials: a line, not a traceback
        assert "Traceback" not in log.read_text(), log

    interrupted = [tid for tid, s in state["trials"].items() if s["phase"] != "Succeeded"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False, env=tracked)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "resuming with" in out.stdout
    status = json.loads((run_dir / "status.json").read_text())
    assert status["phase"] == "Succeeded"
    assert status["progress"] == "6/6"
    assert status["fit"]["laws"]["params"]["exponent"] > 0
    state = json.loads((run_dir / "state.json").read_text())
    for tid, loss in before.items():  # finished trials were not trained again
        assert state["trials"][tid]["loss"] == loss
        log = (run_dir / "trials" / tid / "log.txt").read_text()
        assert log.count("--- attempt") == 1
    assert (run_dir / "trials.csv").exists()
    assert "isoFLOP parabolas" in out.stdout
    runs = assert_sweep_tracked(mlflow_server, run_dir, "isoflop/tiny")
    assert "MLflow experiment 'isoflop/tiny': " in out.stdout
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server)
    trials = {r.info.run_name: r for r in runs["trial"]}
    for tid in interrupted:  # a trial resumed from its checkpoint went on in the run it began
        said = re.search(
            r"resumed from step (\d+)", (run_dir / "trials" / tid / "log.txt").read_text()
        )
        if said:
            run = trials[tid]
            steps = [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")]
            assert min(steps) < int(said.group(1)) < max(steps) == int(run.data.params["steps"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "/nonexistent.yaml"], "isoflop: error: cannot read /nonexistent.yaml"),
        (
            ["run", "examples/quickstart.yaml", "--run-dir", "/proc/isoflop-run"],
            "isoflop: error: cannot write to the run directory /proc/isoflop-run",
        ),
        (
            ["run", "examples/quickstart.yaml", "--simulate", "--law", "1,2,3"],
            "isoflop: error: --law takes five or six positive numbers",
        ),
        (
            ["forecast", "examples/quickstart.yaml", "--runs", "1"],
            "isoflop: error: a forecast needs at least 2 simulated runs",
        ),
    ],
)
def test_bad_input_ends_in_one_sentence(args: list[str], message: str) -> None:
    out = subprocess.run(
        isoflop(*args), capture_output=True, text=True, cwd=ROOT, timeout=120, check=False
    )
    assert out.returncode == 2
    assert out.stderr.startswith(message), out.stderr
    assert out.stderr.count("\n") == 1


def test_a_reader_that_stops_early_gets_no_traceback() -> None:
    """`isoflop plan --json | head`: the pipe closes mid-output.

    The plan (~53 kB) fits in a default 64 KiB pipe, so the writer could finish before the reader
    closes; a one-page pipe makes it block mid-output, as it would on a longer plan.
    """
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)
    with os.fdopen(write_end, "wb") as child_stdout:
        proc = subprocess.Popen(
            isoflop("plan", "examples/paper-in-context.yaml", "--json"),
            stdout=child_stdout,
            stderr=subprocess.PIPE,
        )
    assert proc.stderr is not None
    with os.fdopen(read_end, "rb") as reader:
        assert reader.read(10) == b'{\n  "accou'
    assert proc.wait(timeout=60) == 141  # 128 + SIGPIPE, as a shell reports it
    assert proc.stderr.read() == b""


def test_a_run_directory_of_another_sweep_is_refused(tmp_path: Path) -> None:
    first = subprocess.run(
        isoflop(
            "run", "examples/quickstart.yaml", "--simulate", "--run-dir", str(tmp_path), "--plain"
        ),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        check=False,
    )
    assert first.returncode == 0, first.stderr
    other = subprocess.run(
        isoflop("run", "examples/paper-in-context.yaml", "--simulate", "--run-dir", str(tmp_path)),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert other.returncode == 2
    assert "holds the run of sweep 'quickstart', not 'paper-in-context'" in other.stderr


def test_a_missing_data_source_fails_each_trial_once_with_the_trainers_sentence(
    tmp_path: Path,
) -> None:
    manifest = api.yaml_load(write_tiny(tmp_path / "tiny.yaml").read_text())
    gone = tmp_path / "gone"
    manifest["spec"]["data"]["source"] = f"file://{gone}"
    manifest["spec"]["retries"] = {"perTrial": 2, "maxFailedTrials": 2}
    path = tmp_path / "gone.yaml"
    path.write_text(yaml.safe_dump(manifest))
    # the CLI refuses it before any trial starts, in one sentence
    out = subprocess.run(isoflop("run", str(path), "--run-dir", str(tmp_path / "cli")),
                         capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1
    assert f"no shard index at file://{gone}" in out.stderr
    assert not (tmp_path / "cli" / "trials").exists()
    # data that goes away after that check: each trial fails at its first attempt, not 3 times
    from isoflop.local.backends import make_backend

    sweep = api.parse_sweep(manifest)
    run = Run(sweep, tmp_path / "run", make_backend("local", sweep.spec, Law(), 0.0, gpus=()))
    decision = run.run(Display(stream=io.StringIO(), live=False))
    assert decision.phase == "Failed"
    launched = list((tmp_path / "run" / "trials").glob("*/log.txt"))
    assert len(launched) >= 3  # maxFailedTrials 2: the third failure ends the sweep
    for log in launched:
        assert log.read_text().count("--- attempt") == 1, log
    failed = [s for s in run.state.trials.values() if s.phase == "Failed" and s.error]
    assert any(s.error.startswith(f"no shard index at file://{gone}") for s in failed), failed


def test_a_local_confirmation_interrupted_mid_training_resumes_with_its_prediction(
    tmp_path: Path,
) -> None:
    """A real CPU sweep with spec.confirm: Ctrl-C while the confirmation trains stops it with a
    checkpoint; the same command resumes it from there with the prediction it stored before it
    started, and its result is recorded once."""
    manifest = yaml.safe_load(write_tiny(tmp_path / "tiny.yaml").read_text())
    manifest["spec"]["confirm"] = [2e11]  # 2x the largest budget: enough steps to interrupt
    manifest["spec"]["fit"] = {"bootstrap": 100, "method": "both"}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(manifest))
    run_dir = tmp_path / "run"
    cmd = isoflop("run", str(tmp_path / "tiny.yaml"), "--run-dir", str(run_dir), "--plain")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    progress = run_dir / "trials" / "confirm-2e11" / "progress.json"
    deadline = time.time() + 600
    while not (progress.exists() and json.loads(progress.read_text() or "{}").get("step", 0) > 50):
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline
        time.sleep(0.2)
    state = json.loads((run_dir / "state.json").read_text())
    (stored,) = state["confirmations"]  # stored before it started
    assert all(s["phase"] == "Succeeded" for t, s in state["trials"].items() if t != "confirm-2e11")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    state = json.loads((run_dir / "state.json").read_text())
    assert state["trials"]["confirm-2e11"]["phase"] == "Pending"

    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    status = json.loads((run_dir / "status.json").read_text())
    (c,) = status["confirmations"]
    assert c["predictedLoss"] == stored["predictedLoss"]  # never predicted again
    assert c["lossInterval"] == stored["lossInterval"]
    assert c["attempts"] == 1  # the interrupted attempt is not counted
    assert c["measuredLoss"] is not None
    assert "isoflop: confirmation confirm-2e11: measured" in out.stdout
    log = (run_dir / "trials" / "confirm-2e11" / "log.txt").read_text()
    assert "isoflop-train: trial confirm-2e11 resumed from step" in log
    result = json.loads((run_dir / "trials" / "confirm-2e11" / "result.json").read_text())
    assert result["eval_loss"] == pytest.approx(c["measuredLoss"])
