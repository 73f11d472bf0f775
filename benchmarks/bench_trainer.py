"""Trainer throughput per rung: tokens/s, achieved TFLOP/s, MFU, peak memory; eager vs compiled.

One JSON line per (rung, mode). FLOPs are the exact training FLOPs of `isoflop_trainer.config`
(the planner's numbers); data is pre-encoded latents already on the device, so the figures are
the model's and the optimizer's. Eager, measured in the same run, is the baseline for compiled.

    python benchmarks/bench_trainer.py --ladder quickstart            # CPU
    python benchmarks/bench_trainer.py --ladder paper --batch 64      # GPU: bf16, flash SDPA
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from isoflop_trainer.config import DiTConfig
from isoflop_trainer.flow import flow_loss
from isoflop_trainer.model import DiT
from isoflop_trainer.train import PEAK_BF16_FLOPS

LADDERS = {
    # (depth, width, heads) on the quickstart's 3x16x16 images, patch 4, 8 x 32 text
    "quickstart": [(1, 32, 1), (2, 64, 2), (3, 96, 3), (4, 128, 4)],
    # the paper's rule (width 64 x depth, head dim 64) on 4x32x32 latents, 77 x 768 text, plus
    # two rungs past its largest to reach the >= 300M-parameter sizes of the MFU target
    "paper": [
        (4, 256, 4),
        (8, 512, 8),
        (12, 768, 12),
        (15, 960, 15),
        (18, 1152, 18),
        (22, 1408, 22),
    ],
}


def config(ladder: str, depth: int, width: int, heads: int, family: str) -> DiTConfig:
    if ladder == "quickstart":
        return DiTConfig(
            family,
            depth,
            width,
            heads,
            patch_size=4,
            latent_channels=3,  # type: ignore[arg-type]
            latent_height=16,
            latent_width=16,
            text_length=8,
            text_dim=32,
        )
    return DiTConfig(family, depth, width, heads)  # type: ignore[arg-type]


def measure(
    cfg: DiTConfig,
    batch: int,
    steps: int,
    warmup: int,
    compiled: bool,
    device: torch.device,
    dtype: torch.dtype | None,
    compile_mode: str | None = None,
) -> dict[str, float]:
    torch.manual_seed(0)
    model = DiT(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    fn = torch.compile(model, mode=compile_mode) if compiled else model
    x0 = torch.randn(batch, cfg.latent_channels, cfg.latent_height, cfg.latent_width, device=device)
    text = torch.randn(batch, cfg.text_length, cfg.text_dim, device=device)
    noise, t = torch.randn_like(x0), torch.rand(batch, device=device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype, enabled=dtype is not None):
            loss = flow_loss(fn, x0, text, t, noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    start = time.perf_counter()
    for _ in range(warmup):
        step()
    sync()
    warm = time.perf_counter() - start
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    seconds = (time.perf_counter() - start) / steps
    flops = batch * cfg.flops_per_sample().total / seconds
    out = {
        "step_seconds": seconds,
        "warmup_seconds": warm,
        "tokens_per_second": batch * cfg.tokens_per_sample / seconds,
        "tflops": flops / 1e12,
    }
    if device.type == "cuda":
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ladder", choices=sorted(LADDERS), default="quickstart")
    ap.add_argument("--family", choices=["in-context", "cross-attention"], default="in-context")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rungs", type=int, nargs="*", help="depths to run (default: all)")
    ap.add_argument("--modes", nargs="+", default=["eager", "compiled"])
    ap.add_argument("--compile-mode", default=None, help="e.g. max-autotune-no-cudagraphs")
    args = ap.parse_args()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else None
    peak = None
    name = platform.processor() or platform.machine()
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        name = torch.cuda.get_device_name()
        peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)
    for depth, width, heads in LADDERS[args.ladder]:
        if args.rungs and depth not in args.rungs:
            continue
        cfg = config(args.ladder, depth, width, heads, args.family)
        baseline = None
        for mode in args.modes:
            fig = measure(
                cfg,
                args.batch,
                args.steps,
                args.warmup,
                mode == "compiled",
                device,
                dtype,
                args.compile_mode,
            )
            line = {
                "bench": "trainer",
                "ladder": args.ladder,
                "family": args.family,
                "depth": depth,
                "width": width,
                "params": cfg.params().total,
                "batch": args.batch,
                "mode": mode,
                "compile_mode": args.compile_mode if mode == "compiled" else None,
                "device": name,
                "precision": "bf16" if cuda else "fp32",
                **{k: round(v, 6) for k, v in fig.items()},
            }
            if peak:
                line["mfu"] = round(fig["tflops"] * 1e12 / peak, 4)
            if mode == "eager":
                baseline = fig["step_seconds"]
            elif baseline:
                line["speedup_vs_eager"] = round(baseline / fig["step_seconds"], 3)
            print(json.dumps(line), flush=True)
            if cuda:
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
