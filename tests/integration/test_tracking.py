"""`isoflop run` into a real MLflow server that goes away mid-sweep: it costs what the server did
not take, said in the status and the report, never the sweep. (A tracked sweep's experiment,
equal to its trials.csv across an interrupt and a resume: tests/integration/test_run.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from tests.integration.test_run import write_tiny
from tests.mlflow_server import experiment_runs
from tests.net import Forwarder


def isoflop_run(manifest: Path, run_dir: Path, uri: str, **kw: Any) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "isoflop.cli", "run", str(manifest), "--run-dir", str(run_dir)]
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    return subprocess.Popen(
        [*cmd, "--plain"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw
    )


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
    _, runs = experiment_runs(mlflow_server, "isoflop/cut")
    finished = {r.info.run_name for r in runs if r.info.status == "FINISHED"}
    lost = sorted(t["id"] for t in status["trials"] if t["id"] not in finished)
    assert lost, "every trial's run ended before the cut"
    for t in status["trials"]:
        said = [line for line in not_logged if line.startswith(f"trial {t['id']}: ")]
        assert bool(said) == (t["id"] not in finished), (t["id"], not_logged)
    assert any(line.startswith("run cut: fitted laws: ") for line in not_logged)
    assert "Not logged in MLflow" in (run_dir / "report.md").read_text()
    assert "isoflop: not logged in MLflow: trial " in out
