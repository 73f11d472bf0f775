"""muP for the built-in DiTs (isoflop_trainer.models.mup): a coordinate check and a learning-rate
transfer check, each beside the standard parameterization failing it, on CPU."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from isoflop import api
from isoflop.sweep.plan import ladder, plan
from isoflop.sweep.trials import train_config
from isoflop_trainer.config import DiTConfig, Parameterization
from isoflop_trainer.models import mup
from isoflop_trainer.models.dit import DiT
from isoflop_trainer.models.flow import flow_loss

BASE = 32
RATES = [1e-3 * 2**k for k in range(1, 6)]  # 2e-3 to 3.2e-2, a factor 2 apart


def config(width: int, parameterization: Parameterization, latent: int = 16) -> DiTConfig:
    return DiTConfig(
        "in-context",
        2,
        width,
        width // 16,  # a fixed head dimension: width grows through heads
        patch_size=4,
        latent_channels=3,
        latent_height=latent,
        latent_width=latent,
        text_length=8 if latent == 16 else 4,
        text_dim=32,
        parameterization=parameterization,
        base_width=BASE,
    )


def optimizer(model: DiT, cfg: DiTConfig, lr: float) -> torch.optim.AdamW:
    opt = torch.optim.AdamW(mup.param_groups(model, cfg), lr=lr, betas=(0.9, 0.95))
    for group in opt.param_groups:  # as the trainer's step sets them
        group["lr"] = lr * group["lr_scale"]
    return opt


def test_the_layers_get_their_roles_and_rates_and_base_width_is_the_standard_exactly() -> None:
    cfg = config(128, "mup")
    model = DiT(cfg)
    roles = {name: mup.role(name, p) for name, p in model.named_parameters()}
    assert roles["final_layer.linear.weight"] == "output"
    assert roles["x_embedder.weight"] == roles["y_embedder.weight"] == "input"
    assert roles["t_embedder.mlp.0.weight"] == "input"
    assert roles["blocks.0.attn.qkv.weight"] == roles["blocks.1.mlp.fc2.weight"] == "hidden"
    assert roles["blocks.0.adaLN_modulation.1.weight"] == "hidden"
    assert roles["t_embedder.mlp.2.weight"] == "hidden"
    assert roles["blocks.0.attn.qkv.bias"] == roles["final_layer.linear.bias"] == "input"
    scales = {g["name"]: g["lr_scale"] for g in mup.param_groups(model, cfg)}
    assert scales == {"input": 1.0, "hidden": BASE / 128, "output": BASE / 128}
    (only,) = mup.param_groups(DiT(config(128, "standard")), config(128, "standard"))
    assert only["lr_scale"] == 1.0  # one group, as before muP: old checkpoints still load

    # at its base width muP is the standard parameterization: same weights, same training
    losses = {}
    for par in ("standard", "mup"):
        cfg = config(BASE, par)
        torch.manual_seed(0)
        model = DiT(cfg)
        losses[par] = train(model, cfg, 1e-2, steps=3)
    assert losses["mup"] == losses["standard"]


def train(model: DiT, cfg: DiTConfig, lr: float, steps: int, batch: int = 32) -> float:
    """Adam on a fixed set of blocky latents and random captions; the final validation loss."""
    side = cfg.latent_height
    g = torch.Generator().manual_seed(1)
    coarse = torch.randn(64, 3, side // 4, 1, side // 4, 1, generator=g)
    x0 = coarse.expand(64, 3, side // 4, 4, side // 4, 4).reshape(64, 3, side, side)
    text = torch.randn(64, cfg.text_length, 32, generator=g)
    opt = optimizer(model, cfg, lr)
    for _ in range(steps):
        idx = torch.randint(0, 64, (batch,), generator=g)
        t, noise = torch.rand(batch, generator=g), torch.randn((batch, 3, side, side), generator=g)
        loss = flow_loss(model, x0[idx], text[idx], t, noise)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # the trainer's default clip
        opt.step()
    held = torch.Generator().manual_seed(99)
    with torch.no_grad():
        t, noise = torch.rand(64, generator=held), torch.randn(x0.shape, generator=held)
        return float(flow_loss(model, x0, text, t, noise))


def coordinates(width: int, par: Parameterization, lr: float = 1e-2) -> dict[str, float]:
    """Mean |activation| of each block's output and of the model's output after 5 Adam steps."""
    cfg = config(width, par)
    torch.manual_seed(0)
    model = DiT(cfg)
    sizes: dict[str, float] = {}

    def keep(name: str) -> Any:
        return lambda module, args, out: sizes.__setitem__(name, float(out.abs().mean()))

    for k, block in enumerate(model.blocks):
        block.register_forward_hook(keep(f"block{k}"))
    model.final_layer.register_forward_hook(keep("output"))
    train(model, cfg, lr, steps=5, batch=32)  # its last forward is the held-out one
    return sizes


def test_the_coordinate_check_is_flat_across_widths_under_mup_and_grows_under_standard() -> None:
    widths = [32, 64, 128, 256]
    mu = {w: coordinates(w, "mup") for w in widths}
    sp = {w: coordinates(w, "standard") for w in widths}
    for layer in mu[32]:
        sizes = [mu[w][layer] for w in widths]
        assert max(sizes) / min(sizes) < 1.25, (layer, sizes)  # flat
    # the standard parameterization's updates grow with width: so do its activations
    assert sp[256]["output"] / sp[32]["output"] > 2.0, sp
    assert sp[256]["block1"] / sp[32]["block1"] > 1.3, sp


def best_rate(width: int, par: Parameterization) -> int:
    """The index in RATES of the lowest loss after 60 steps (tiny latents: 4 image tokens)."""
    losses = []
    for lr in RATES:
        cfg = config(width, par, latent=8)
        torch.manual_seed(0)
        losses.append(train(DiT(cfg), cfg, lr, steps=60, batch=8))
    return min(range(len(RATES)), key=lambda i: losses[i])


def test_a_rate_tuned_at_the_narrowest_width_holds_at_8x_under_mup_and_not_under_standard() -> None:
    narrow = best_rate(BASE, "mup")  # the standard one too: at base width they are the same
    assert 1 <= narrow <= len(RATES) - 2  # inside the grid
    assert abs(best_rate(8 * BASE, "mup") - narrow) <= 1  # within one grid step
    assert narrow - best_rate(8 * BASE, "standard") >= 2  # the standard optimum moved down


def test_a_sweep_with_mup_gives_every_rung_its_parameterization_and_base_width() -> None:
    base = {
        "model": {"depths": [1, 2, 4], "widthPerDepth": 32, "headDim": 32, "patchSize": 4},
        "data": {"latentShape": [3, 16, 16], "textLength": 8, "textDim": 32},
        "budgets": [3e10, 1e11],
        "training": {"globalBatchSize": 16, "minSteps": 10, "parameterization": "mup"},
    }
    spec = api.parse_spec(base)
    rungs = ladder(spec)
    assert {(r.config.parameterization, r.config.base_width) for r in rungs} == {("mup", 32)}
    t = next(t for t in plan(spec).trials if t.width == 128)
    cfg = train_config(spec, "sw", t)
    assert cfg.learning_rate == spec.training.learning_rate  # muP scales per layer, not per rung
    assert mup.width_ratio(cfg.model) == 4.0
    wrong = {**base, "training": {**base["training"], "learningRateScaling": "width"}}
    with pytest.raises(api.ManifestError, match="learningRateScaling must be none with it"):
        api.parse_spec(wrong)


def test_the_trainer_steps_each_layer_group_at_its_own_rate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A muP trial through the trainer: Adam's groups at the schedule's rate times their scale
    (width 64 on base 32: hidden and output at half); at its base width, the standard trial's
    losses exactly."""
    from isoflop_trainer.train import train
    from tests.trainer.helpers import tiny

    seen: list[dict[str, float]] = []
    step = torch.optim.AdamW.step

    def recorded(self: torch.optim.AdamW, *args: Any, **kwargs: Any) -> Any:
        seen.append({g["name"]: g["lr"] for g in self.param_groups})
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", recorded)
    wide = {"width": 64, "heads": 4, "parameterization": "mup", "base_width": 32}
    result, code = train(tiny(steps=3, eval_samples=0, learning_rate=2e-3, model=wide))
    assert code == 0, result.get("error")
    assert seen[-1] == {"input": 2e-3, "hidden": 1e-3, "output": 1e-3}
    mu, _ = train(
        tiny(steps=5, eval_samples=0, model={"parameterization": "mup", "base_width": 32})
    )
    sp, _ = train(tiny(steps=5, eval_samples=0))
    assert mu["losses"] == sp["losses"]  # tiny's width is 32: muP at its base width
