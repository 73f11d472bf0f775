"""The DiT matches the exact accounting of `config`: parameters exactly, FLOPs within 2%."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from isoflop import api
from isoflop.sweep.plan import ladder
from isoflop_trainer.config import DiTConfig
from isoflop_trainer.models.dit import DiT, sincos_2d
from tests.unit.test_plan import EXAMPLES

VARIANTS = list(
    itertools.product(
        ["in-context", "cross-attention"], ["adaln-zero", "in-context"], [False, True]
    )
)


def small(family: str, conditioning: str, qk_norm: bool) -> DiTConfig:
    return DiTConfig(
        family,
        2,
        64,
        2,
        latent_channels=3,
        latent_height=8,
        latent_width=8,  # type: ignore[arg-type]
        text_length=5,
        text_dim=16,
        timestep_conditioning=conditioning,  # type: ignore[arg-type]
        qk_norm=qk_norm,
    )


@pytest.mark.parametrize(
    "example", ["quickstart.yaml", "paper-in-context.yaml", "paper-cross-attention.yaml"]
)
def test_parameter_count_equals_config_for_every_rung(example: str) -> None:
    spec = api.load_sweep(EXAMPLES / example).spec
    for rung in ladder(spec):
        with torch.device("meta"):  # 250M-parameter rungs, no memory
            model = DiT(rung.config)
        got = {
            name: sum(p.numel() for p in getattr(model, name).parameters())
            for name in rung.config.params().by_module
        }
        assert got == rung.config.params().by_module, rung.name


@pytest.mark.parametrize(("family", "conditioning", "qk_norm"), VARIANTS)
def test_parameters_and_training_flops_match_the_counter(
    family: str, conditioning: str, qk_norm: bool
) -> None:
    cfg = small(family, conditioning, qk_norm)
    model = DiT(cfg)
    assert sum(p.numel() for p in model.parameters()) == cfg.params().total
    x, t, y = torch.randn(3, 3, 8, 8), torch.rand(3), torch.randn(3, 5, 16)
    counter = FlopCounterMode(display=False)
    # the math kernel runs attention as bmm, which the counter sees; fused kernels count the same
    with sdpa_kernel(SDPBackend.MATH), counter:
        model(x, t, y).pow(2).mean().backward()
    expected = 3 * cfg.flops_per_sample().total
    assert counter.get_total_flops() == pytest.approx(expected, rel=0.02)


@pytest.mark.parametrize(("family", "conditioning", "qk_norm"), VARIANTS)
def test_output_is_zero_at_init_and_has_the_input_shape(
    family: str, conditioning: str, qk_norm: bool
) -> None:
    model = DiT(small(family, conditioning, qk_norm))
    out = model(torch.randn(2, 3, 8, 8), torch.rand(2), torch.randn(2, 5, 16))
    assert out.shape == (2, 3, 8, 8)
    assert torch.count_nonzero(out) == 0


def test_text_changes_the_prediction_after_a_step() -> None:
    for family in ("in-context", "cross-attention"):
        model = DiT(small(family, "adaln-zero", False))
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        x, t, y = torch.randn(4, 3, 8, 8), torch.rand(4), torch.randn(4, 5, 16)
        for _ in range(3):  # adaLN-Zero: the first step moves only the output layer
            opt.zero_grad()
            (model(x, t, y) - x).pow(2).mean().backward()
            opt.step()
        a, b = model(x, t, y), model(x, t, torch.randn(4, 5, 16))
        assert not torch.allclose(a, b), family


def test_sincos_positions_are_distinct() -> None:
    pos = sincos_2d(16, 4, 4)
    assert pos.shape == (16, 16)
    assert torch.cdist(pos, pos).fill_diagonal_(1.0).min() > 0.1


@pytest.mark.parametrize("family", ["in-context", "cross-attention"])
def test_a_low_precision_residual_stream_under_autocast(family: str) -> None:
    """CPU sibling of the bf16 GPU path: the blocks carry bf16 instead of fp32 between them,
    and the prediction and gradients stay close to the fp32-residual ones."""
    cfg = small(family, "adaln-zero", True)
    torch.manual_seed(0)
    ref = DiT(cfg)
    for p in ref.parameters():  # away from adaLN-Zero's zero init, so every block counts
        torch.nn.init.normal_(p, std=0.05)
    low = DiT(cfg, residual_dtype=torch.bfloat16)
    low.load_state_dict(ref.state_dict())
    x, t, y = torch.randn(4, 3, 8, 8), torch.rand(4), torch.randn(4, 5, 16)
    outs, grads, seen = {}, {}, {}
    for name, model in (("fp32", ref), ("bf16", low)):
        dtypes: list[torch.dtype] = []
        for block in model.blocks:
            block.register_forward_hook(lambda m, i, o, out=dtypes: out.append(o.dtype))
        with torch.autocast("cpu", torch.bfloat16):
            out = model(x, t, y)
        out.float().pow(2).mean().backward()
        seen[name] = set(dtypes)
        outs[name] = out.float()
        grads[name] = torch.cat(
            [p.grad.flatten() for p in model.parameters() if p.grad is not None]
        )
    assert seen == {"fp32": {torch.float32}, "bf16": {torch.bfloat16}}
    scale = outs["fp32"].abs().mean()
    assert (outs["bf16"] - outs["fp32"]).abs().mean() < 0.015 * scale  # measured: 0.006
    cos = F.cosine_similarity(grads["bf16"], grads["fp32"], dim=0)
    assert cos > 0.9999
