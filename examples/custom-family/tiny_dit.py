"""A team's own transformer as an isoflop family: a small in-context DiT written from scratch.

isoflop trains it, counts its parameters and FLOPs with its model check, and fits its laws, all
from this file: `TinyDiT` says how to build a rung from its arguments and how to feed it. The
package's entry point (pyproject.toml) names it `tiny-dit` in the group `isoflop.families`; a
sweep picks it with `model.family: custom` and `model.transformer: tiny-dit`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from isoflop_trainer.models.adapters import Family, FamilyError, Inputs


class Block(nn.Module):
    """Pre-norm self-attention and MLP, both scaled by the timestep (AdaLN)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False)
        self.mlp = nn.Sequential(
            nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width)
        )
        self.ada = nn.Linear(width, 4 * width)
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        s1, g1, s2, g2 = self.ada(c).unsqueeze(1).chunk(4, dim=-1)
        b, n, w = h.shape
        q, k, v = self.qkv(self.norm1(h) * (1 + s1)).view(b, n, 3, self.heads, -1).unbind(2)
        a = nn.functional.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        )  # fused attention
        h = h + (1 + g1) * self.proj(a.transpose(1, 2).reshape(b, n, w))
        return h + (1 + g2) * self.mlp(self.norm2(h) * (1 + s2))


class Model(nn.Module):
    def __init__(self, depth: int, width: int, heads: int, patch: int, inputs: Inputs) -> None:
        super().__init__()
        self.patch, self.inputs = patch, inputs
        c, gh, gw = (
            inputs.latent_channels,
            inputs.latent_height // patch,
            inputs.latent_width // patch,
        )
        self.embed = nn.Linear(c * patch * patch, width)
        self.pos = nn.Parameter(torch.randn(1, gh * gw, width) * 0.02)
        self.text = nn.Linear(inputs.text_dim, width)
        self.time = nn.Sequential(nn.Linear(64, width), nn.SiLU(), nn.Linear(width, width))
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(depth))
        self.out = nn.Linear(width, c * patch * patch)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        b, c, hgt, wid = x.shape
        p = self.patch
        patches = x.unfold(2, p, p).unfold(3, p, p).permute(0, 2, 3, 1, 4, 5)
        tokens = self.embed(patches.reshape(b, -1, c * p * p)) + self.pos
        freqs = torch.exp(-math.log(1e4) * torch.arange(32, device=x.device) / 32)
        angles = 1000 * t[:, None] * freqs[None]
        cond = self.time(torch.cat([angles.sin(), angles.cos()], dim=-1))
        h = torch.cat([self.text(text), tokens], dim=1)  # text tokens in context
        for block in self.blocks:
            h = block(h, cond)
        out = self.out(h[:, text.shape[1] :])
        out = out.view(b, hgt // p, wid // p, c, p, p).permute(0, 3, 1, 4, 2, 5)
        return out.reshape(b, c, hgt, wid)


class TinyDiT(Family):
    """The family isoflop loads from the entry point: build a rung, feed it, count its tokens."""

    def build(self, arguments: dict[str, Any], inputs: Inputs) -> nn.Module:
        unknown = set(arguments) - {"depth", "width", "heads", "patch"}
        if unknown:
            raise FamilyError(
                f"tiny-dit takes depth, width, heads and patch, not {sorted(unknown)}"
            )
        depth, width = int(arguments["depth"]), int(arguments["width"])
        heads, patch = int(arguments.get("heads", 1)), int(arguments.get("patch", 2))
        if width % heads:
            raise FamilyError(f"width {width} does not split into {heads} heads")
        return Model(depth, width, heads, patch, inputs)

    def velocity(
        self, model: nn.Module, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor
    ) -> torch.Tensor:
        return model(x, t, text)  # type: ignore[no-any-return]

    def tokens_per_sample(self, arguments: dict[str, Any], inputs: Inputs) -> int:
        patch = int(arguments.get("patch", 2))
        image = (inputs.latent_height // patch) * (inputs.latent_width // patch)
        return image + inputs.text_length

    def shape(self, arguments: dict[str, Any], model: nn.Module) -> tuple[int, int]:
        return int(arguments["width"]), int(arguments.get("heads", 1))
