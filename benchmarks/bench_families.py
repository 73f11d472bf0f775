"""Class families: the model check's time per rung, and a diffusers rung's training step against
the built-in in-context DiT of the same width and depth (the baseline, measured in the same run).

One JSON line per measurement:
- `check`: seconds to build and count each rung of a ladder on the meta device (the first rung
  of a process pays diffusers' import);
- `step`: median seconds of the bare training step (forward, backward, AdamW) of each family on
  the quickstart's data shapes (3x16x16 latents, patch 4, 8 x 32 text, batch 16, fp32), and its
  ratio to the in-context DiT's.

    python -m benchmarks.bench_families --out benchmarks/results/families-DATE.jsonl   # CPU
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from typing import Any

import torch

from isoflop_trainer.config import DiTConfig, ModelConfig
from isoflop_trainer.families import ClassConfig
from isoflop_trainer.modelcheck import check
from isoflop_trainer.models.adapters import build
from isoflop_trainer.models.flow import flow_loss

SHAPES = {"latent_channels": 3, "latent_height": 16, "latent_width": 16, "text_length": 8,
          "text_dim": 32}  # fmt: skip


def cls(name: str, arguments: dict[str, Any]) -> ClassConfig:
    return ClassConfig("diffusers", name, arguments, **SHAPES)


def sd3(depth: int, width: int, head_dim: int = 8) -> ClassConfig:
    arguments = {"num_layers": depth, "num_attention_heads": width // head_dim,
                 "attention_head_dim": head_dim, "patch_size": 4}  # fmt: skip
    return cls("SD3Transformer2DModel", arguments)


def rungs(depth: int, width: int, head_dim: int = 8) -> dict[str, ModelConfig]:
    heads = width // head_dim
    same = {"num_layers": depth, "num_attention_heads": heads, "attention_head_dim": head_dim}
    flux = {**same, "num_layers": max(depth // 2, 1), "num_single_layers": depth}
    return {
        "in-context": DiTConfig("in-context", depth, width, heads, patch_size=4, **SHAPES),
        "SD3Transformer2DModel": sd3(depth, width, head_dim),
        "FluxTransformer2DModel": cls("FluxTransformer2DModel", flux),
        "PixArtTransformer2DModel": cls("PixArtTransformer2DModel", {**same, "patch_size": 4}),
    }


def step_seconds(cfg: ModelConfig, batch: int, steps: int) -> tuple[float, int]:
    torch.manual_seed(0)
    model = build(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x0, noise = torch.randn(batch, 3, 16, 16), torch.randn(batch, 3, 16, 16)
    text, t = torch.randn(batch, 8, 32), torch.rand(batch)
    times = []
    for i in range(steps + 3):  # three warm-up steps left out
        start = time.perf_counter()
        loss = flow_loss(model, x0, text, t, noise)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= 3:
            times.append(time.perf_counter() - start)
    return statistics.median(times), sum(p.numel() for p in model.parameters())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (a trial's, locally)")
    ap.add_argument("--out", help="also append the JSON lines here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    host = {"host": platform.node(), "cpu": platform.processor() or platform.machine(),
            "torch": torch.__version__, "threads": args.threads}  # fmt: skip
    lines: list[dict[str, Any]] = []
    ladder = {f"d2w{w}": sd3(2, w).request() for w in (40, 48, 56, 64, 72, 80, 96, 112, 128)}
    verdict = check(ladder)["rungs"]
    seconds = [v["seconds"] for v in verdict.values()]
    lines.append({"bench": "check", "family": "SD3Transformer2DModel", "rungs": len(seconds),
                  "first_s": seconds[0], "median_rest_s": round(statistics.median(seconds[1:]), 4),
                  **host})  # fmt: skip
    base = None
    for name, cfg in rungs(args.depth, args.width).items():
        s, params = step_seconds(cfg, args.batch, args.steps)
        base = base or s
        shape = cfg.arguments if isinstance(cfg, ClassConfig) else {"depth": cfg.depth}
        lines.append({"bench": "step", "family": name, "width": args.width, **shape,
                      "batch": args.batch, "params": params, "step_s": round(s, 5),
                      "vs_in_context": round(s / base, 3), **host})  # fmt: skip
    for line in lines:
        print(json.dumps(line))
    if args.out:
        with open(args.out, "a") as f:
            f.writelines(json.dumps(line) + "\n" for line in lines)


if __name__ == "__main__":
    main()
