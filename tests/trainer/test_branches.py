"""WSD branches in the trainer: a stable run keeps checkpoints at branch points, and a cooldown
trial started from one trains exactly what a WSD trial from scratch would, paying only its own
steps."""

from __future__ import annotations

from pathlib import Path

import pytest

from isoflop_trainer.components.checkpoint import branch_name
from isoflop_trainer.config import TrainConfig
from isoflop_trainer.train import train
from tests.trainer.helpers import tiny

WARMUP = 5  # the stable run and every branch share it: the prefixes must match step for step


def branch(tmp: Path, name: str, steps: int, at: int, parent: Path) -> TrainConfig:
    return tiny(
        tmp / name,
        steps=steps,
        schedule="wsd",
        decay_fraction=0.2,
        warmup_steps=WARMUP,
        checkpoint=str(tmp / f"{name}-ckpt"),
        branch_from=str(parent),
        branch_step=at,
        trial=name,
    )


def test_a_branch_trains_what_a_wsd_trial_from_scratch_does_and_pays_only_its_cooldown(
    tmp_path: Path,
) -> None:
    stable = tmp_path / "stable"
    parent, code = train(  # the stable run: constant rate after the warmup
        tiny(
            tmp_path / "parent",
            steps=32,
            schedule="constant",
            warmup_steps=WARMUP,
            checkpoint=str(stable),
            branch_points=(16, 32),
        )
    )
    assert code == 0
    assert parent["own_flops"] == parent["flops"]
    assert {p.name for p in stable.iterdir()} >= {branch_name(16), branch_name(32)}
    for steps, at in ((20, 16), (40, 32)):  # cooldowns of 4 and 8 steps
        scratch, code = train(
            tiny(
                tmp_path / f"scratch-{steps}",
                steps=steps,
                schedule="wsd",
                decay_fraction=0.2,
                warmup_steps=WARMUP,
            )
        )
        assert code == 0
        cfg = branch(tmp_path, f"branch-{steps}", steps, at, stable)
        branched, code = train(cfg)
        assert code == 0, branched.get("error")
        assert branched["eval_loss"] == scratch["eval_loss"]  # the same model, bit for bit
        assert branched["train_loss_ema"] == scratch["train_loss_ema"]
        assert branched["samples"] == scratch["samples"]
        assert branched["flops"] == scratch["flops"]  # the model trained: all of its (N, D)
        assert branched["branched_from_step"] == at
        assert branched["own_flops"] == scratch["flops"] * (steps - at) // steps  # the cooldown
        assert scratch["own_flops"] == scratch["flops"]
        assert scratch["branched_from_step"] is None
        again, code = train(cfg)  # a restarted branch resumes from its own checkpoint
        assert code == 0
        assert (again["eval_loss"], again["branched_from_step"], again["own_flops"]) == (
            branched["eval_loss"],
            at,
            branched["own_flops"],
        )


def test_a_branch_before_its_stable_run_got_there_fails_for_a_retry(tmp_path: Path) -> None:
    result, code = train(branch(tmp_path, "early", 20, 16, tmp_path / "nothing-yet"))
    assert code == 1  # transient: the stable run may still reach the branch point
    assert result["permanent"] is False
    assert "no branch checkpoint at step 16" in result["error"]


def test_branch_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="branch_points must lie in"):
        tiny(steps=10, branch_points=(12,), checkpoint="/tmp/x")
    with pytest.raises(ValueError, match="need a checkpoint location"):
        tiny(steps=10, branch_points=(5,))
    with pytest.raises(ValueError, match="branch_step must lie in"):
        tiny(steps=10, branch_from="/tmp/x", branch_step=10)
