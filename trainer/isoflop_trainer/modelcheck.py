"""The model check: every rung of a sweep built and measured in the trainer's environment.

Each rung is built on the meta device (no memory, no weights: a 10B-parameter rung costs what a
tiny one does), fed one sample of the data's shapes, and run forward and backward under
`torch.utils.flop_counter.FlopCounterMode` with the math attention kernel, whose matmuls the
counter sees. For the built-in DiTs that measure equals `config.py`'s formulas exactly; for a
class family it is the only count there is. A rung the class refuses is reported with the
constructor's sentence, never a traceback.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from isoflop_trainer.config import DiTConfig, ModelConfig
from isoflop_trainer.families import ClassConfig, Measure
from isoflop_trainer.models import adapters
from isoflop_trainer.models.adapters import FamilyError, Inputs, build, family_of

ATTENTION_OPS = ("bmm", "baddbmm", "_scaled_dot_product")


def measure(cfg: ModelConfig) -> Measure:
    """Parameters and per-sample training FLOPs of one rung (FamilyError: it cannot be built)."""
    with torch.device("meta"):
        model = build(cfg)
        x = torch.randn(1, cfg.latent_channels, cfg.latent_height, cfg.latent_width)
        t = torch.rand(1)
        text = torch.randn(1, cfg.text_length, cfg.text_dim)
    counter = FlopCounterMode(display=False)
    try:
        with sdpa_kernel(SDPBackend.MATH), counter:
            out = model(x, t, text)
            forward = counter.get_total_flops()
            out.float().pow(2).mean().backward()
    except FamilyError:
        raise
    except Exception as err:  # a model the adapter builds but cannot run on the data's shapes
        raise FamilyError(f"the model fails on one sample of the data's shapes: {err}") from None
    if tuple(out.shape) != tuple(x.shape):
        raise FamilyError(
            f"the model's output has shape {tuple(out.shape)}, not the latent's {tuple(x.shape)}"
        )
    by_op = counter.get_flop_counts().get("Global", {})
    attention = sum(v for op, v in by_op.items() if str(op).split(".")[1].startswith(ATTENTION_OPS))
    params = sum(p.numel() for p in model.parameters())
    blocks = list(adapters.blocks(model))
    non_embedding = sum(p.numel() for b in blocks for p in b.parameters())
    if isinstance(cfg, DiTConfig):
        width, heads, tokens = cfg.width, cfg.heads, cfg.tokens_per_sample
    else:
        family = family_of(cfg)
        assert isinstance(model, adapters.FamilyModel)
        width, heads = family.shape(dict(cfg.arguments), model.inner)
        tokens = family.tokens_per_sample(dict(cfg.arguments), Inputs.of(cfg))
    return Measure(
        params=params,
        non_embedding=non_embedding,
        forward=forward,
        backward=counter.get_total_flops() - forward,
        attention=attention,
        tokens_per_sample=tokens,
        depth=len(blocks),
        width=width,
        heads=heads,
    )


def check(rungs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The check of a sweep's rungs, each a ClassConfig request: for each rung its measure and
    the seconds it took, or the sentence saying why the class refused it."""
    out: dict[str, Any] = {}
    for name, request in rungs.items():
        start = time.perf_counter()
        try:
            got = measure(ClassConfig(**request))
        except (FamilyError, ValueError) as err:
            out[name] = {"error": str(err)}
            continue
        out[name] = {"measure": asdict(got), "seconds": round(time.perf_counter() - start, 4)}
    return {"rungs": out, "torch": torch.__version__}
