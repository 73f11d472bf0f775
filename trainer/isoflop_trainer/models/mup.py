"""muP for the built-in DiTs (Yang et al., Tensor Programs V; Zheng et al., NeurIPS 2025, for DiT,
PixArt-alpha and MMDiT): the initialisation and Adam learning rates per layer that make a rate
tuned at `base_width` hold at every width.

Adam's rules (Tensor Programs V, table 3), with m = width / base_width:
- input weights (patch, text and timestep-frequency embeddings), every bias and norm gain: init
  independent of width, learning rate x 1;
- hidden weights (attention, MLP, adaLN, the timestep MLP's second layer): init variance
  ~ 1/fan_in, learning rate x 1/m;
- the output weights (the final linear): zero init (DiT's own), learning rate x 1/m.
muP's attention rule (logits 1/head_dim) differs from the standard 1/sqrt(head_dim) only where the
head dimension grows with width; the ladders here grow the heads at a fixed head dimension, where
the two differ by a constant, so the standard scale is kept.

At base width the muP model and its optimizer are the standard ones exactly, so a rate tuned
there is the standard parameterization's rate at that width.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from isoflop_trainer.config import DiTConfig, ModelConfig

INPUTS = ("x_embedder.", "y_embedder.", "t_embedder.mlp.0.")
OUTPUT = "final_layer.linear.weight"


def width_ratio(cfg: ModelConfig) -> float:
    """m = width / base_width (1 under the standard parameterization)."""
    if cfg.parameterization != "mup":
        return 1.0
    return cfg.width / (cfg.base_width or cfg.width)


def role(name: str, param: torch.Tensor) -> str:
    """input, hidden or output: how muP scales this parameter."""
    if name == OUTPUT:
        return "output"
    if param.ndim < 2 or name.startswith(INPUTS):
        return "input"  # biases and norm gains are input-like (fan_in 1)
    return "hidden"


def param_groups(model: nn.Module, cfg: ModelConfig) -> list[dict[str, Any]]:
    """The optimizer's parameter groups, each with `lr_scale`: the multiplier of the schedule's
    learning rate. The standard parameterization: one group at 1 (as before muP, so its
    checkpoints' optimizer states keep their shape)."""
    if cfg.parameterization != "mup":
        return [{"params": list(model.parameters()), "lr_scale": 1.0, "name": "all"}]
    m = width_ratio(cfg)
    scales = {"input": 1.0, "hidden": 1.0 / m, "output": 1.0 / m}
    groups: dict[str, list[torch.Tensor]] = {"input": [], "hidden": [], "output": []}
    for name, param in model.named_parameters():
        groups[role(name, param)].append(param)
    return [
        {"params": params, "lr_scale": scales[kind], "name": kind}
        for kind, params in groups.items()
        if params
    ]


def initialize(model: nn.Module, cfg: DiTConfig) -> None:
    """muP's initialisation on top of DiT's: input weights at their base-width variance (Xavier
    at base width), the timestep MLP's hidden layer at std 0.02 / sqrt(m). Nothing changes at
    base width or under the standard parameterization."""
    m = width_ratio(cfg)
    if m == 1.0:
        return
    base = cfg.base_width or cfg.width
    with torch.no_grad():
        for name, param in model.named_parameters():
            if not name.startswith(INPUTS) or param.ndim < 2:
                continue
            if name.startswith("t_embedder."):
                continue  # std 0.02 at every width: already independent of it
            fan_in = param[0].numel()
            bound = math.sqrt(6.0 / (fan_in + base))  # Xavier uniform at the base width
            param.uniform_(-bound, bound)
        hidden_t = model.get_submodule("t_embedder.mlp.2")
        assert isinstance(hidden_t, nn.Linear)
        nn.init.normal_(hidden_t.weight, std=0.02 / math.sqrt(m))
