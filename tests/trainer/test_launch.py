"""isoflop-torchrun: the trial's launcher exits with its ranks' code and stops without a traceback.

Each test runs the launcher as the local runner and a pod run it: the component's own arguments."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from isoflop_trainer.component import trial
from isoflop_trainer.config import TrainConfig
from isoflop_trainer.launch import exit_code
from tests.trainer.helpers import env, tiny, wait_for_file


def launch(cfg: TrainConfig, procs: int = 1) -> list[str]:
    role = trial(cfg.to_dict(), image="local", procs_per_node=procs).roles[0]
    return [sys.executable, "-m", "isoflop_trainer.launch", *role.args]


def test_a_ranks_exit_code_is_the_launchers() -> None:
    assert exit_code(65) == 65  # permanent: the Job's podFailurePolicy fails it at once
    assert exit_code(143) == 143  # preempted after a checkpoint: retried, not counted
    assert exit_code(-9) == 137  # killed by SIGKILL, as a shell and Kubernetes say it
    assert exit_code(-15) == 143
    assert exit_code(300) == 1  # no process exits with that: a failure
    assert exit_code(0) == 1  # torch reported a failure, whatever the code: never a success


def test_a_permanent_failure_exits_65_through_the_launcher(tmp_path: Path) -> None:
    cfg = tiny(tmp_path, data=str(tmp_path / "no-such-shards"))
    out = subprocess.run(launch(cfg), env=env(), capture_output=True, text=True, timeout=180)
    assert out.returncode == 65, out.stderr[-3000:]  # plain torchrun exits 1 here
    said = out.stdout + out.stderr
    assert "Traceback" not in said
    assert "isoflop-torchrun: rank 0 exited with 65; exiting 65" in said
    assert json.loads(Path(cfg.results or "").read_text())["permanent"] is True


@pytest.mark.parametrize("procs", [1, 2])
def test_sigterm_stops_the_ranks_after_their_checkpoint_without_a_traceback(
    tmp_path: Path, procs: int
) -> None:
    cfg = tiny(
        tmp_path / "run",
        steps=5000,
        eval_samples=8,
        checkpoint=str(tmp_path / "ckpt"),
        checkpoint_every=50,
    )
    proc = subprocess.Popen(
        launch(cfg, procs), env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    wait_for_file(proc, tmp_path / "ckpt" / "checkpoint.pt", 180)
    proc.send_signal(signal.SIGTERM)
    said, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, said[-3000:]  # the Job's rule: preempted, retried uncounted
    assert "Traceback" not in said
    assert "isoflop-torchrun: stopped by SIGTERM" in said
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["status"] == "preempted"
    assert 0 < result["step"] < 5000
