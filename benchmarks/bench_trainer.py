"""Trainer throughput per rung: tokens/s, achieved TFLOP/s, MFU, peak memory; eager vs compiled.

One JSON line per (rung, mode). FLOPs are the exact training FLOPs of `isoflop_trainer.config`
(the planner's numbers).

- `eager`, `compiled`: the bare step (forward, backward, clipping, fused AdamW) on latents
  already on the device: the model's and the optimizer's speed. Eager, measured in the same run,
  is the baseline for compiled.
- `loop-eager`, `loop-compiled`: the trainer's own loop (`trainer.Trainer`) on procedural data:
  data loading, per-step noise, schedule, bookkeeping and telemetry included, timed over its
  last two logging windows. Its baseline is the bare step of the same compilation, so
  `vs_bare_step` is what the loop around the model costs.

    python benchmarks/bench_trainer.py --ladder quickstart --modes eager loop-eager      # CPU
    python benchmarks/bench_trainer.py --ladder paper --batch 64      # GPU: bf16, flash SDPA
    python benchmarks/bench_trainer.py --ladder paper --rungs 22 --batch 128 \
        --modes compiled loop-compiled --inductor coordinate_descent_tuning=1
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from typing import Any

import torch

from isoflop_trainer.components.runtime import setup
from isoflop_trainer.components.telemetry import Telemetry
from isoflop_trainer.config import DiTConfig, Family, TrainConfig, peak_bf16_flops
from isoflop_trainer.models.dit import DiT
from isoflop_trainer.models.flow import flow_loss
from isoflop_trainer.trainer import Trainer

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


def config(ladder: str, depth: int, width: int, heads: int, family: Family) -> DiTConfig:
    if ladder == "quickstart":
        return DiTConfig(
            family,
            depth,
            width,
            heads,
            patch_size=4,
            latent_channels=3,
            latent_height=16,
            latent_width=16,
            text_length=8,
            text_dim=32,
        )
    return DiTConfig(family, depth, width, heads)


def measure(
    cfg: DiTConfig,
    batch: int,
    steps: int,
    warmup: int,
    compiled: bool,
    device: torch.device,
    dtype: torch.dtype | None,
    compile_mode: str | None = None,
    profile: bool = False,
    low_precision_residual: bool = False,
) -> dict[str, Any]:
    torch.manual_seed(0)
    model = DiT(cfg, residual_dtype=dtype if low_precision_residual else None).to(device)
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
    if profile:
        out.update(kernel_profile(step, sync, device, steps=3))
    return out


KINDS = (  # (kind, name fragments), first match wins; names are lower-cased kernel or op names
    ("attention", ("flash", "fmha", "attention", "sdpa", "cudnn")),
    ("communication", ("nccl", "all_reduce", "allreduce")),
    ("optimizer", ("adam", "multi_tensor", "foreach")),  # clipping's foreach norm included
    ("matmul", ("gemm", "nvjet", "cutlass", "xmma", "triton_tem", "mm", "matmul", "conv")),
)


def kernel_kind(name: str) -> str:
    low = name.lower()
    if low.startswith("triton_") and not low.startswith("triton_tem"):
        return "other"  # inductor's fused pointwise / reduction kernels (norms, modulation, GELU)
    return next((kind for kind, parts in KINDS if any(p in low for p in parts)), "other")


def kernel_profile(
    step: Any, sync: Any, device: torch.device, steps: int, top: int = 8
) -> dict[str, Any]:
    """Where a step's time goes: GPU kernel time (CPU op self time on CPU) by kind, and the
    largest kernels, in milliseconds per step."""
    from torch.profiler import DeviceType, ProfilerActivity, profile

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        sync()
    times: dict[str, float] = {}
    for evt in prof.key_averages():
        if cuda and evt.device_type != DeviceType.CUDA:
            continue
        us = evt.self_device_time_total if cuda else evt.self_cpu_time_total
        if us > 0:
            times[evt.key] = times.get(evt.key, 0.0) + us / 1e3 / steps
    total = sum(times.values()) or 1.0
    share: dict[str, float] = {}
    for name, ms in times.items():
        kind = kernel_kind(name)
        share[kind] = share.get(kind, 0.0) + ms / total
    largest = sorted(times.items(), key=lambda kv: -kv[1])[:top]
    return {
        "kernel_ms_per_step": round(total, 3),
        "time_share": {k: round(v, 4) for k, v in sorted(share.items())},
        "top_kernels": [[name[:120], round(ms, 3)] for name, ms in largest],
    }


class WindowRates(Telemetry):
    """The trainer's telemetry (no HTTP server), keeping every logging window's throughput."""

    def __init__(self) -> None:
        super().__init__("bench", "bench", 0.0)
        self.rates: list[float] = []

    def set(self, **values: float | None) -> None:
        super().set(**values)
        rate = values.get("tokens_per_second")
        if rate is not None:
            self.rates.append(rate)


def measure_loop(
    cfg: DiTConfig,
    batch: int,
    steps: int,
    compiled: bool,
    device: torch.device,
    workers: int,
    low_precision_residual: bool = False,
) -> dict[str, Any]:
    """The real training loop: windows {0}, {1..s}, {s+1..2s}, {2s+1..3s}; the last two count."""
    train_cfg = TrainConfig(
        model=cfg,
        steps=1 + 3 * steps,
        global_batch_size=batch,
        learning_rate=1e-4,
        precision="bf16",  # on GPU; CPU runs in fp32
        compile=compiled,
        low_precision_residual=low_precision_residual,
        eval_samples=0,
        log_every=steps,
        termination_log=None,
        num_workers=workers,
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rates = WindowRates()
    start = time.perf_counter()
    result, code = Trainer(train_cfg, setup(), rates).fit()
    if code != 0:
        raise RuntimeError(f"the training loop failed: {result.get('error')}")
    wall = time.perf_counter() - start
    tokens_per_second = statistics.fmean(rates.rates[-2:])
    seconds = batch * cfg.tokens_per_sample / tokens_per_second
    out = {
        "step_seconds": seconds,
        "warmup_seconds": wall - 2 * steps * seconds,
        "tokens_per_second": tokens_per_second,
        "tflops": batch * cfg.flops_per_sample().total / seconds / 1e12,
    }
    if device.type == "cuda":
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def inductor_settings(pairs: list[str]) -> dict[str, Any]:
    """KEY=VALUE pairs for torch._inductor.config, each parsed as the type of its default."""
    import torch._inductor.config as inductor

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not hasattr(inductor, key):
            raise SystemExit(f"--inductor {pair!r}: expected KEY=VALUE with a known inductor KEY")
        default = getattr(inductor, key)
        value: Any = raw
        if isinstance(default, bool):
            value = raw.lower() in ("1", "true", "yes", "on")
        elif isinstance(default, int | float):
            try:
                value = type(default)(raw)
            except ValueError:
                raise SystemExit(f"--inductor {pair!r}: {key} takes a number") from None
        setattr(inductor, key, value)
        out[key] = value
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ladder", choices=sorted(LADDERS), default="quickstart")
    ap.add_argument("--family", choices=["in-context", "cross-attention"], default="in-context")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rungs", type=int, nargs="*", help="depths to run (default: all)")
    ap.add_argument(
        "--modes",
        nargs="+",
        choices=["eager", "compiled", "loop-eager", "loop-compiled"],
        default=["eager", "compiled"],
    )
    ap.add_argument("--compile-mode", default=None, help="e.g. max-autotune-no-cudagraphs")
    ap.add_argument("--workers", type=int, default=0, help="data loader workers (loop modes)")
    ap.add_argument(
        "--low-precision-residual",
        action="store_true",
        help="keep the residual stream in bf16 rather than fp32 (GPU; TrainConfig's option)",
    )
    ap.add_argument(
        "--profile",
        action="store_true",
        help="bare-step modes: time share of matmul, attention, optimizer and other kernels",
    )
    ap.add_argument(
        "--inductor",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="torch._inductor.config settings, e.g. coordinate_descent_tuning=1",
    )
    args = ap.parse_args()
    inductor = inductor_settings(args.inductor)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else None
    peak = None
    name = platform.processor() or platform.machine()
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        name = torch.cuda.get_device_name()
        peak = peak_bf16_flops(name)
    for depth, width, heads in LADDERS[args.ladder]:
        if args.rungs and depth not in args.rungs:
            continue
        cfg = config(args.ladder, depth, width, heads, args.family)
        bare: dict[str, float] = {}
        for mode in args.modes:
            compiled = mode.endswith("compiled")
            if mode.startswith("loop"):
                fig = measure_loop(
                    cfg,
                    args.batch,
                    args.steps,
                    compiled,
                    device,
                    args.workers,
                    args.low_precision_residual,
                )
            else:
                fig = measure(
                    cfg,
                    args.batch,
                    args.steps,
                    args.warmup,
                    compiled,
                    device,
                    dtype,
                    args.compile_mode,
                    args.profile,
                    args.low_precision_residual,
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
                "inductor": inductor if compiled else None,
                "workers": args.workers if mode.startswith("loop") else None,
                "residual": "bf16" if args.low_precision_residual and cuda else "fp32",
                "device": name,
                "precision": "bf16" if cuda else "fp32",
                **{k: round(v, 6) if isinstance(v, float) else v for k, v in fig.items()},
            }
            if peak:
                line["mfu"] = round(fig["tflops"] * 1e12 / peak, 4)
            if mode in ("eager", "compiled"):
                bare[mode] = fig["step_seconds"]
            if mode == "compiled" and "eager" in bare:
                line["speedup_vs_eager"] = round(bare["eager"] / fig["step_seconds"], 3)
            if mode.startswith("loop") and mode[5:] in bare:
                line["vs_bare_step"] = round(bare[mode[5:]] / fig["step_seconds"], 3)
            print(json.dumps(line), flush=True)
            if cuda:
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
