"""The launch description: one torchx AppDef for a trial, single- and multi-node."""

from __future__ import annotations

import json

import pytest

from isoflop_trainer.component import trial
from isoflop_trainer.config import TrainConfig
from tests.trainer.helpers import tiny


def test_component_describes_a_torchrun_trial() -> None:
    cfg = tiny(steps=5)
    one = trial(cfg.to_dict(), image="img:1", gpus_per_node=8, cpu=32, memMB=256_000)
    role = one.roles[0]
    assert role.entrypoint == "isoflop-torchrun"
    assert role.args[:5] == ["--nnodes", "1", "--nproc-per-node", "8", "--standalone"]
    assert role.args[5:9] == ["-m", "isoflop_trainer.cli", "train", "--config-json"]
    assert TrainConfig.from_dict(json.loads(role.args[9])) == cfg
    assert (role.resource.gpu, role.resource.cpu, role.num_replicas) == (8, 32, 1)
    multi = trial(cfg.to_dict(), image="img:1", nodes=4, gpus_per_node=8).roles[0]
    assert multi.num_replicas == 4
    assert "--standalone" not in multi.args
    assert multi.args[4:6] == ["--master-port", "29500"]
    cpu = trial(cfg.to_dict(), image="img:1").roles[0]
    assert cpu.args[3] == "1"  # one process on CPU
    with pytest.raises(ValueError, match="nodes must be at least 1"):
        trial(cfg.to_dict(), image="img:1", nodes=0)
