"""A diffusers family trains like a built-in one: Flux and PixArt rungs learn, checkpoint, and
resume bit for bit (the EMA too), through the same trainer and objective."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from isoflop_trainer.families import ClassConfig
from isoflop_trainer.modelcheck import measure
from isoflop_trainer.train import train
from tests.trainer.helpers import TINY_MODEL, tiny

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


def rung(name: str) -> ClassConfig:
    shapes = {k: TINY_MODEL[k] for k in ("latent_channels", "latent_height", "latent_width")}
    cfg = ClassConfig(
        "diffusers",
        name,
        ARGUMENTS[name],
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
