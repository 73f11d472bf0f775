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

from isoflop import api
from isoflop.local import backends
from isoflop.local.devices import DevicePool
from isoflop.local.runner import Run
from isoflop.sweep import engine
from isoflop.sweep.forecast import Law, simulated_loss

ROOT = Path(__file__).resolve().parents[2]


class Trainer:
    """Stands in for a trial's torchrun process group: what it was launched with, and an exit
    code the test sets (after writing its result, as the trainer does)."""

    def __init__(self, cmd: list[str], env: dict[str, str], cwd: Path, **_: Any) -> None:
        self.cmd, self.devices, self.cwd = cmd, env["CUDA_VISIBLE_DEVICES"], Path(cwd)
        self.threads = int(env["OMP_NUM_THREADS"])
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


def test_small_trials_pack_onto_shared_gpus_and_one_failing_loses_none_of_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Packing (spec.resources.packing): the quickstart's tiny rungs pack 3 to a GPU, so two GPUs
    and parallelism 2 train 6 at once, no GPU ever holds more than 3, a trial that fails leaves
    its pack-mates running to their results (it alone is retried), and a runner restarted
    mid-sweep relaunches no finished trial."""
    started: list[Trainer] = []

    def popen(cmd: list[str], **kwargs: Any) -> Trainer:
        started.append(Trainer(cmd, **kwargs))
        return started[-1]

    monkeypatch.setattr(backends.subprocess, "Popen", popen)
    manifest = api.yaml_load((ROOT / "examples" / "quickstart.yaml").read_text())
    manifest["spec"]["parallelism"] = 2
    manifest["spec"]["resources"] = {"gpusPerNode": 1, "packing": {"maxTrialsPerGpu": 3}}
    manifest["spec"]["fit"] = {"bootstrap": 100, "method": "parabola"}
    s = api.parse_sweep(manifest)
    devices = ("0", "1")
    backend = backends.LocalBackend(2, DevicePool(devices, 1))
    backend.threads = 6  # a slot's cores (here: whatever this machine has)
    run = Run(s, tmp_path, backend)
    trials = {t.id: t for t in run.plan.trials}
    assert run.packing.per_gpu(next(iter(trials.values()))) == 3
    rng = random.Random(1)
    most, failed, restarted = 0, "", False
    finished_before_restart: set[str] = set()
    for step in range(10_000):
        decision = run.step()
        if decision.phase in ("Succeeded", "Failed"):
            break
        live = [t for t in started if t.code is None]
        most = max(most, len(live))
        for d in devices:  # never more than 3 trials, i.e. 3 thirds, on one GPU
            assert sum(t.devices == d for t in live) <= 3
        for t in live:
            assert t.devices in devices  # one GPU each
            assert t.threads == 2  # a third of a slot's cores
            assert t.cmd[t.cmd.index("--nproc-per-node") + 1] == "1"
        if not failed and len(live) == 6:  # a full house: one trial of a pack fails
            victim = rng.choice(live)
            failed, victim.code = victim.cwd.name, 1
            mates = [t for t in live if t.devices == victim.devices and t is not victim]
            assert len(mates) == 2
            continue
        if not restarted and step > 12:  # the runner dies; a new one takes the directory over
            finished_before_restart = {
                tid for tid, st in run.state.trials.items() if st.phase == "Succeeded"
            }
            assert finished_before_restart
            for t in live:  # the old runner's trainers are gone with it
                t.code = -9
            run.close()
            backend = backends.LocalBackend(2, DevicePool(devices, 1))
            backend.threads = 6
            run = Run(s, tmp_path, backend)
            launched_before = len(started)
            restarted = True
            continue
        if live:
            t = rng.choice(live)
            trial = trials[t.cwd.name]
            t.finish(simulated_loss(Law(), trial.id, trial.params, trial.tokens, 0.005, 0))
    assert decision.phase == "Succeeded", decision.message
    assert most == 6  # two GPUs, three to each
    assert failed
    assert all(st.phase == "Succeeded" for st in run.state.trials.values())
    assert run.state.trials[failed].attempts >= 2  # it alone was retried
    relaunched = [t.cwd.name for t in started[launched_before:]]
    assert not set(relaunched) & finished_before_restart  # nothing finished trains again
    log = (tmp_path / "trials" / started[0].cwd.name / "log.txt").read_text()
    assert "(packed: 1/3 of it)" in log


def test_packing_without_gpus_is_said_and_parallelism_alone_limits(tmp_path: Path) -> None:
    manifest = api.yaml_load((ROOT / "examples" / "quickstart.yaml").read_text())
    manifest["spec"]["parallelism"] = 2
    manifest["spec"]["resources"] = {"gpusPerNode": 1, "packing": {"maxTrialsPerGpu": 3}}
    run = Run(api.parse_sweep(manifest), tmp_path, backends.LocalBackend(2, DevicePool((), 1)))
    assert run.notices == [
        "spec.resources.packing shares GPUs, and this run has none: parallelism alone limits "
        "the trials at once"
    ]
    decision = engine.decide(run.engine_spec, run.plan, {})
    assert len(decision.launches) == 2  # not 6: no GPU to pack onto
    run.close()
