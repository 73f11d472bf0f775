"""A diffusers family trains like a built-in one: Flux and PixArt rungs learn, checkpoint, and
resume bit for bit (the EMA too), through the same trainer and objective."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from isoflop_trainer.families import ClassConfig
from isoflop_trainer.modelcheck import measure
from isoflop_trainer.train import train
from tests.trainer.helpers import TINY_MODEL, run_trial, tiny

ARGUMENTS = {
    "FluxTransformer2DModel": {
        "num_layers": 1,
        "num_single_layers": 2,
        "num_attention_heads": 2,
        "attention_head_dim": 16,
    },
    "PixArtTransformer2DModel": {
        "num_layers": 2,
        "num_attention_heads": 2,
        "attention_head_dim": 16,
        "patch_size": 4,
    },
}


def sd3() -> ClassConfig:
    arguments = {"num_layers": 2, "num_attention_heads": 2, "attention_head_dim": 16,
                 "patch_size": 4}  # fmt: skip
    return measured_config("SD3Transformer2DModel", arguments)


def rung(name: str) -> ClassConfig:
    return measured_config(name, ARGUMENTS[name])


def measured_config(name: str, arguments: dict[str, object]) -> ClassConfig:
    shapes = {k: TINY_MODEL[k] for k in ("latent_channels", "latent_height", "latent_width")}
    cfg = ClassConfig(
        "diffusers",
        name,
        arguments,
        **shapes,  # type: ignore[arg-type]
        text_length=int(TINY_MODEL["text_length"]),  # type: ignore[call-overload]
        text_dim=int(TINY_MODEL["text_dim"]),  # type: ignore[call-overload]
    )
    return dataclasses.replace(cfg, measure=measure(cfg))


@pytest.mark.parametrize("name", sorted(ARGUMENTS))
def test_a_diffusers_rung_trains_checkpoints_and_resumes_bit_for_bit(
    name: str, tmp_path: Path
) -> None:
    model = rung(name)
    whole, code = train(tiny(model=model, steps=12, ema_decay=0.9, eval_samples=16))
    assert code == 0
    first, last = whole["losses"][0], whole["losses"][-1]
    assert last < first  # it learns
    ckpt = str(tmp_path / "ckpt")
    _, code = train(tiny(model=model, steps=6, ema_decay=0.9, eval_samples=16, checkpoint=ckpt))
    assert code == 0
    assert (tmp_path / "ckpt" / "checkpoint.pt").exists()
    resumed, code = train(
        tiny(model=model, steps=12, ema_decay=0.9, eval_samples=16, checkpoint=ckpt)
    )
    assert code == 0
    assert resumed["eval_loss"] == whole["eval_loss"]  # weights, optimizer and EMA resumed
    assert resumed["losses"][-1] == whole["losses"][-1]
    assert whole["params"] == model.params().total


def test_an_sd3_rung_sharded_over_two_processes_matches_one(tmp_path: Path) -> None:
    """FSDP wraps a diffusers family's own blocks (the adapter's `blocks`), as the DiT's."""
    model = sd3()
    _, one = run_trial(tiny(tmp_path / "one", model=model, steps=6))
    code, fsdp = run_trial(tiny(tmp_path / "fsdp", model=model, steps=6, fsdp=True), procs=2)
    assert code == 0, fsdp.get("error")
    assert fsdp["losses"] == pytest.approx(one["losses"], rel=2e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", ["SD3Transformer2DModel", *sorted(ARGUMENTS)])
def test_a_diffusers_rung_trains_in_bf16_compiled_on_gpu(name: str, tmp_path: Path) -> None:
    """GPU sibling of test_a_diffusers_rung_trains_checkpoints_and_resumes_bit_for_bit (fp32,
    eager on CPU): bf16 autocast and torch.compile through the adapter, with fused attention."""
    model = sd3() if name == "SD3Transformer2DModel" else rung(name)
    result, code = train(
        tiny(tmp_path, model=model, steps=100, precision="bf16", compile=True, eval_samples=64)
    )
    assert code == 0, result.get("error")
    assert result["losses"][-1] < 0.8 * result["losses"][0]
    assert 0 < result["mfu"] < 1
