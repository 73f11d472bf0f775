"""The DiT of `config.DiTConfig`: in-context or cross-attention, adaLN-Zero or a timestep token."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from isoflop_trainer.config import FREQUENCY_DIM, DiTConfig
from isoflop_trainer.models import mup


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """Sin-cos embedding of positions (N,) -> (N, dim)."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    out = positions.double()[:, None] * omega[None]
    emb = torch.cat([torch.sin(out), torch.cos(out)], dim=1)
    return F.pad(emb, (0, dim - emb.shape[1])).float()  # odd dims: one zero column


def sincos_2d(dim: int, height: int, width: int) -> torch.Tensor:
    """Fixed 2-D sin-cos position embedding (height * width, dim), half the channels per axis."""
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    half = dim // 2
    return torch.cat([sincos_1d(half, ys.flatten()), sincos_1d(dim - half, xs.flatten())], dim=1)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class TimestepEmbedder(nn.Module):
    """t in [0, 1] -> sinusoid(1000 t, 256) -> Linear -> SiLU -> Linear."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(FREQUENCY_DIM, width), nn.SiLU(), nn.Linear(width, width)
        )
        half = FREQUENCY_DIM // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
        self.freqs: torch.Tensor
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        args = 1000.0 * t.float()[:, None] * self.freqs[None]  # (B, 128)
        return self.mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=-1))  # (B, D)


class Attention(nn.Module):
    """Multi-head attention through F.scaled_dot_product_attention (fused kernels on GPU)."""

    def __init__(self, width: int, heads: int, qk_norm: bool, cross: bool) -> None:
        super().__init__()
        self.heads, self.cross = heads, cross
        if cross:
            self.q = nn.Linear(width, width)
            self.kv = nn.Linear(width, 2 * width)
        else:
            self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        head_dim = width // heads
        self.q_norm = nn.RMSNorm(head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(head_dim, eps=1e-6) if qk_norm else nn.Identity()

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        B, T, D = x.shape
        if self.cross:
            assert context is not None
            q = self.q(x).view(B, T, self.heads, -1)  # (B, T, H, Dh)
            k, v = self.kv(context).view(B, context.shape[1], 2, self.heads, -1).unbind(2)
        else:
            q, k, v = self.qkv(x).view(B, T, 3, self.heads, -1).unbind(2)  # (B, T, H, Dh) each
        q, k = self.q_norm(q), self.k_norm(k)
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        )
        return self.proj(out.transpose(1, 2).reshape(B, T, D))  # (B, T, D)


class Mlp(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = (
            nn.Linear(width, hidden),
            nn.GELU("tanh"),
            nn.Linear(hidden, width),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Self-attention (+ cross-attention to text) + MLP; adaLN-Zero modulation or affine norms."""

    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        d, affine = cfg.width, not cfg.adaln
        self.norm1 = nn.LayerNorm(d, elementwise_affine=affine, eps=1e-6)
        self.attn = Attention(d, cfg.heads, cfg.qk_norm, cross=False)
        self.cross = cfg.family == "cross-attention"
        if self.cross:
            self.norm_c = nn.LayerNorm(d, elementwise_affine=affine, eps=1e-6)
            self.cross_attn = Attention(d, cfg.heads, cfg.qk_norm, cross=True)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=affine, eps=1e-6)
        self.mlp = Mlp(d, cfg.mlp_hidden)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d)) if cfg.adaln else None

    def forward(self, x: torch.Tensor, c: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        if self.adaLN_modulation is not None:
            sh1, sc1, g1, sh2, sc2, g2 = self.adaLN_modulation(c).chunk(6, dim=-1)  # (B, D) each
            x = x + g1[:, None] * self.attn(modulate(self.norm1(x), sh1, sc1))
            if self.cross:
                x = x + self.cross_attn(self.norm_c(x), text)
            return x + g2[:, None] * self.mlp(modulate(self.norm2(x), sh2, sc2))
        x = x + self.attn(self.norm1(x))
        if self.cross:
            x = x + self.cross_attn(self.norm_c(x), text)
        return x + self.mlp(self.norm2(x))


class FinalLayer(nn.Module):
    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        d = cfg.width
        self.norm = nn.LayerNorm(d, elementwise_affine=not cfg.adaln, eps=1e-6)
        self.linear = nn.Linear(d, cfg.patch_dim)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d)) if cfg.adaln else None

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        if self.adaLN_modulation is not None:
            shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
            x = modulate(x, shift, scale)
        return self.linear(x)  # (B, T, p*p*C)


class DiT(nn.Module):
    """Predicts the rectified-flow velocity of a latent given the timestep and text embeddings.

    Under autocast the residual stream stays fp32 (the fp32 position embedding promotes it);
    `residual_dtype` (the autocast dtype, e.g. bf16) keeps it in low precision instead, which
    halves the memory traffic of the norms, modulations and residual adds around the matmuls.
    Use it only under autocast: the blocks' fp32 weights need autocast to take bf16 inputs.
    """

    def __init__(self, cfg: DiTConfig, residual_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.cfg, self.residual_dtype = cfg, residual_dtype
        d, p = cfg.width, cfg.patch_size
        self.x_embedder = nn.Conv2d(cfg.latent_channels, d, kernel_size=p, stride=p)
        self.t_embedder = TimestepEmbedder(d)
        self.y_embedder = nn.Linear(cfg.text_dim, d)
        grid = (cfg.latent_height // p, cfg.latent_width // p)
        self.register_buffer("pos_embed", sincos_2d(d, *grid)[None], persistent=False)  # (1, T, D)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.final_layer = FinalLayer(cfg)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """All initialisation: Xavier linears, zero biases, zero adaLN and output (output = 0),
        and under muP its input layers at their base width's scale."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm | nn.RMSNorm) and m.weight is not None:
                nn.init.ones_(m.weight)
                bias = getattr(m, "bias", None)
                if isinstance(bias, torch.Tensor):
                    nn.init.zeros_(bias)
        w = self.x_embedder.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        if self.x_embedder.bias is not None:
            nn.init.zeros_(self.x_embedder.bias)
        for layer in (self.t_embedder.mlp[0], self.t_embedder.mlp[2]):
            assert isinstance(layer, nn.Linear)
            nn.init.normal_(layer.weight, std=0.02)
        for module in [*self.blocks, self.final_layer]:
            if module.adaLN_modulation is not None:
                out = module.adaLN_modulation[-1]
                assert isinstance(out, nn.Linear)
                nn.init.zeros_(out.weight)
                nn.init.zeros_(out.bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)
        mup.initialize(self, self.cfg)  # muP's input and timestep layers (standard: nothing)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, p*p*C) -> (B, C, H, W)."""
        cfg, p = self.cfg, self.cfg.patch_size
        h, w = cfg.latent_height // p, cfg.latent_width // p
        x = x.view(x.shape[0], h, w, p, p, cfg.latent_channels)
        return torch.einsum("bhwpqc->bchpwq", x).reshape(
            x.shape[0], cfg.latent_channels, h * p, w * p
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W), t (B,) in [0, 1], text (B, L, text_dim) -> velocity (B, C, H, W)."""
        tokens = self.x_embedder(x).flatten(2).transpose(1, 2) + self.pos_embed  # (B, T, D)
        n_image = tokens.shape[1]
        c = self.t_embedder(t)  # (B, D)
        txt = self.y_embedder(text)  # (B, L, D)
        prefix = [txt] if self.cfg.family == "in-context" else []
        if not self.cfg.adaln:
            prefix.insert(0, c[:, None])  # the timestep as an in-context token
        seq = torch.cat([*prefix, tokens], dim=1) if prefix else tokens  # (B, S, D)
        if self.residual_dtype is not None:
            seq = seq.to(self.residual_dtype)
        for block in self.blocks:
            seq = block(seq, c, txt)
        out = self.final_layer(seq[:, -n_image:], c)  # image tokens only
        return self.unpatchify(out)
