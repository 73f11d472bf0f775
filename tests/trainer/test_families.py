"""Class families: the model check's measure equals the built-in formulas exactly, diffusers'
transformers are built, fed and measured through their adapters, and bad input is a sentence."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest
import torch

from isoflop import api
from isoflop.api.spec import MAX_CLASS_RUNGS
from isoflop.sweep.families import class_configs, measured, unchecked
from isoflop.sweep.plan import ladder
from isoflop_trainer.components.telemetry import TERMINATION_MESSAGE_LIMIT
from isoflop_trainer.config import DiTConfig
from isoflop_trainer.families import ClassConfig, Measure, compact, from_compact
from isoflop_trainer.modelcheck import check, measure
from isoflop_trainer.models.adapters import build

SMALL = {"num_layers": 2, "num_attention_heads": 2, "attention_head_dim": 32}
CLASSES = {
    "SD3Transformer2DModel": SMALL,
    "FluxTransformer2DModel": {**SMALL, "num_layers": 1, "num_single_layers": 2},
    "PixArtTransformer2DModel": SMALL,
}


@pytest.mark.parametrize("family", ["in-context", "cross-attention"])
@pytest.mark.parametrize("conditioning", ["adaln-zero", "in-context"])
def test_the_model_check_equals_the_formulas_of_the_built_in_families(
    family: str, conditioning: str
) -> None:
    cfg = DiTConfig(
        family,  # type: ignore[arg-type]
        3,
        128,
        2,
        latent_channels=4,
        latent_height=16,
        latent_width=16,
        text_length=8,
        text_dim=32,
        timestep_conditioning=conditioning,  # type: ignore[arg-type]
    )
    got, params, flops = measure(cfg), cfg.params(), cfg.flops_per_sample()
    assert (got.params, got.non_embedding) == (params.total, params.non_embedding)
    assert (got.forward, got.backward, got.attention) == (
        flops.forward,
        flops.backward,
        flops.attention,
    )
    assert (got.depth, got.width, got.heads, got.tokens_per_sample) == (
        3,
        128,
        2,
        cfg.tokens_per_sample,
    )


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_a_diffusers_rung_is_measured_and_predicts_a_velocity_of_the_latents_shape(
    name: str,
) -> None:
    cfg = ClassConfig("diffusers", name, CLASSES[name], 4, 16, 16, 8, 32)
    got = measure(cfg)
    torch.manual_seed(0)
    model = build(cfg)
    assert sum(p.numel() for p in model.parameters()) == got.params
    assert (got.width, got.heads) == (64, 2)
    assert got.forward > 0
    assert got.backward == pytest.approx(2 * got.forward, rel=0.05)
    x, t, text = torch.randn(2, 4, 16, 16), torch.rand(2), torch.randn(2, 8, 32)
    v = model(x, t, text)
    assert v.shape == x.shape
    v.pow(2).mean().backward()  # every parameter the loss reaches gets a gradient
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_the_check_names_an_argument_the_class_does_not_take_and_one_the_data_sets() -> None:
    base = ClassConfig("diffusers", "SD3Transformer2DModel", SMALL, 4, 16, 16, 8, 32)
    rungs = {
        "ok": base.request(),
        "typo": {**base.request(), "arguments": {**SMALL, "num_layer": 3}},
        "clash": {**base.request(), "arguments": {**SMALL, "in_channels": 8}},
    }
    out = check(rungs)["rungs"]
    assert out["ok"]["measure"]["params"] > 0
    assert out["typo"]["error"].startswith("SD3Transformer2DModel takes no argument 'num_layer'")
    assert "in_channels=8 contradicts the data" in out["clash"]["error"]


def sd3_sweep() -> api.ScalingSweep:
    return api.parse_sweep(
        {
            "apiVersion": api.API_VERSION,
            "kind": api.KIND,
            "metadata": {"name": "mmdit"},
            "spec": {
                "model": {
                    "family": "diffusers",
                    "transformer": "SD3Transformer2DModel",
                    "headDim": 32,
                    "widthPerDepth": 32,
                    "depths": [1, 2, 3],
                },
                "data": {"latentShape": [4, 16, 16], "textLength": 8, "textDim": 32},
                "budgets": [1e11, 2e11],
            },
        }
    )


def test_a_class_family_plans_from_its_model_check_and_not_before() -> None:
    spec = sd3_sweep().spec
    assert unchecked(spec) == ["d01", "d02", "d03"]
    with pytest.raises(ValueError, match="no model check yet"):
        ladder(spec)
    table = {cfg.digest(): measure(cfg) for _, cfg in class_configs(spec)}
    rungs = ladder(measured(spec, table))
    assert [r.name for r in rungs] == ["d01", "d02", "d03"]
    assert [r.config.depth for r in rungs] == [1, 2, 3]
    assert [r.config.heads for r in rungs] == [1, 2, 3]  # the shape rule: heads = depth here
    assert rungs[0].config.params().total < rungs[2].config.params().total


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (
            {"family": "diffusers", "transformer": "UNet2DModel", "depths": [1]},
            "isoflop has no adapter for the diffusers class UNet2DModel",
        ),
        ({"family": "diffusers", "depths": [1]}, "needs model.transformer"),
        (
            {"family": "custom", "transformer": "mine", "depths": [1]},
            "model.depths needs a shape rule",
        ),
        (
            {"family": "in-context", "depths": [1], "arguments": {"num_layers": 2}},
            "model.transformer and model.arguments belong to",
        ),
        (
            {
                "family": "diffusers",
                "transformer": "SD3Transformer2DModel",
                "depths": [1],
                "mlpRatio": 2.0,
            },
            "model.mlpRatio shapes the built-in DiTs",
        ),
        (
            {
                "family": "diffusers",
                "transformer": "SD3Transformer2DModel",
                "depths": list(range(1, 34)),
            },
            "a diffusers family's ladder has at most 32 rungs",
        ),
    ],
)
def test_a_bad_class_family_is_refused_in_one_sentence(
    model: dict[str, object], message: str
) -> None:
    doc = {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {"name": "bad"},
        "spec": {"model": model, "budgets": [1e11]},
    }
    with pytest.raises(api.ManifestError, match=message):
        api.parse_sweep(doc)


def test_the_compact_verdict_of_the_largest_ladder_fits_a_termination_message() -> None:
    biggest = Measure(
        params=10**12 - 1,  # more than 16384 wide x 128 deep has
        non_embedding=10**12 - 1,
        forward=10**18 - 1,
        backward=10**18 - 1,
        attention=10**18 - 1,
        tokens_per_sample=99_999,
        depth=999,
        width=16384,
        heads=16384,
    )
    names = [f"rung-name-of-20-c{i:02d}" for i in range(MAX_CLASS_RUNGS)]
    verdict = {"rungs": {n: {"measure": asdict(biggest)} for n in names}, "torch": "2.13.0+cu130"}
    text = compact(verdict)
    assert len(text.encode()) <= TERMINATION_MESSAGE_LIMIT
    assert from_compact(json.loads(text), names) == dict.fromkeys(names, biggest)
    assert from_compact(json.loads(text), names[:-1]) is None  # not the verdict of these rungs
    verdict["rungs"][names[3]] = {"error": "x" * 5000}
    refused = json.loads(compact(verdict))
    assert (refused["status"], refused["rung"], len(refused["error"])) == ("failed", names[3], 1000)
