"""Local trials on GPUs of their own: the runner's assignment through LocalBackend, with a fake
device list and stand-in trainer processes on the CPU; the same on two real GPUs where a machine
has them."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from isoflop import api, backends
from isoflop.devices import DevicePool
from isoflop.forecast import Law, simulated_loss
from isoflop.runner import Run

ROOT = Path(__file__).resolve().parents[2]


class Trainer:
    """Stands in for a trial's torchrun process group: what it was launched with, and an exit
    code the test sets (after writing its result, as the trainer does)."""

    def __init__(self, cmd: list[str], env: dict[str, str], cwd: Path, **_: Any) -> None:
        self.cmd, self.devices, self.cwd = cmd, env["CUDA_VISIBLE_DEVICES"], Path(cwd)
        self.code: int | None = None
        self.pid = -1

    def poll(self) -> int | None:
        return self.code

    def finish(self, loss: float) -> None:
        result = {"status": "succeeded", "eval_loss": loss}
        (self.cwd / "result.json").write_text(json.dumps(result))
        self.code = 0


def sweep(parallelism: int, gpus_per_trial: int) -> api.ScalingSweep:
    manifest = api.yaml_load((ROOT / "examples" / "quickstart.yaml").read_text())
    manifest["spec"]["parallelism"] = parallelism
    manifest["spec"]["resources"] = {"gpusPerNode": gpus_per_trial}
    manifest["spec"]["fit"] = {"bootstrap": 100, "method": "parabola"}
    return api.parse_sweep(manifest)


@pytest.mark.parametrize(
    ("devices", "per_trial", "parallelism", "at_once"),
    [
        (("0", "1", "2"), 1, 4, 3),  # fewer GPUs than parallelism: the GPUs limit
        (("0", "1", "2", "3", "4"), 2, 8, 2),  # two GPUs a trial, one left over
        (("3", "5"), 1, 1, 1),  # parallelism limits; only the GPUs named
        ((), 1, 3, 3),  # no GPU: the CPU, parallelism alone
    ],
)
def test_each_trial_gets_gpus_of_its_own_and_no_gpu_is_oversubscribed(
    devices: tuple[str, ...],
    per_trial: int,
    parallelism: int,
    at_once: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started: list[Trainer] = []

    def popen(cmd: list[str], **kwargs: Any) -> Trainer:
        started.append(Trainer(cmd, **kwargs))
        return started[-1]

    monkeypatch.setattr(backends.subprocess, "Popen", popen)
    s = sweep(parallelism, per_trial)
    backend = backends.LocalBackend(parallelism, DevicePool(devices, per_trial))
    run = Run(s, tmp_path, backend)
    trials = {t.id: t for t in run.plan.trials}
    rng = random.Random(0)
    most = 0
    for _ in range(10_000):
        decision = run.step()
        if decision.phase in ("Succeeded", "Failed"):
            break
        live = [t for t in started if t.code is None]
        most = max(most, len(live))
        used = [d for t in live for d in t.devices.split(",") if d]
        assert len(used) == len(set(used)), [t.devices for t in live]  # never shared
        assert set(used) <= set(devices)
        for t in live:
            assert len([d for d in t.devices.split(",") if d]) == (per_trial if devices else 0)
            procs = t.cmd[t.cmd.index("--nproc-per-node") + 1]
            assert procs == str(per_trial if devices else 1)  # one rank per GPU
        if live:  # one trial ends, at random
            t = rng.choice(live)
            trial = trials[t.cwd.name]
            t.finish(simulated_loss(Law(), trial.id, trial.params, trial.tokens, 0.005, 0))
    assert decision.phase == "Succeeded"
    assert most == at_once  # as many at once as the GPUs (or parallelism) allow, never more
    assert sorted(t.cwd.name for t in started) == sorted(trials)  # each trial launched once
    if devices:  # the GPUs a full house needs were all used, and a trial's log says where
        used = {d for t in started for d in t.devices.split(",")}
        assert len(used) == at_once * per_trial
        log = (tmp_path / "trials" / started[0].cwd.name / "log.txt").read_text()
        assert f"on GPU {started[0].devices}:" in log
    else:
        assert all(t.devices == "" for t in started)


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_two_trials_train_at_once_on_two_gpus(tmp_path: Path) -> None:
    manifest = api.yaml_load((ROOT / "examples" / "quickstart.yaml").read_text())
    manifest["spec"]["budgets"] = manifest["spec"]["budgets"][:2]
    manifest["spec"]["parallelism"] = 2
    manifest["spec"]["fit"] = {"bootstrap": 100, "method": "parabola"}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(manifest))
    out = subprocess.run(
        [sys.executable, "-m", "isoflop.cli", "run", str(path), "--run-dir", str(tmp_path / "run"),
         "--gpus", "0,1", "--plain"],
        capture_output=True, text=True, timeout=1800, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    logs = [p.read_text() for p in (tmp_path / "run" / "trials").glob("*/log.txt")]
    on = {gpu for log in logs for gpu in ("0", "1") if f"on GPU {gpu}:" in log}
    assert on == {"0", "1"}
