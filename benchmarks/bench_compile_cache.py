"""Compile warm-up of a trial, cold vs from the shared compile cache, per rung.

Two real trials per rung (`isoflop-train train` in a fresh process each, torch.compile on,
3 steps): the first finds an empty `compile_cache` store, compiles and saves its caches; the
second is another budget's trial of the same rung (other seed and steps) and unpacks them.
The baseline is the cold trial of the same run. `train_seconds` is almost all warm-up at 3 steps.

    python benchmarks/bench_compile_cache.py                      # CPU, quickstart rungs
    python benchmarks/bench_compile_cache.py --ladder paper --rungs 12 22 --batch 64   # GPU
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from benchmarks.bench_trainer import LADDERS, config
from isoflop_trainer.config import TrainConfig


def trial(cfg: TrainConfig) -> dict[str, Any]:
    command = [sys.executable, "-m", "isoflop_trainer.cli", "train"]
    out = subprocess.run(
        [*command, "--config-json", json.dumps(cfg.to_dict())],
        capture_output=True,
        text=True,
        check=False,
    )
    assert cfg.results is not None
    result: dict[str, Any] = json.loads(Path(cfg.results).read_text())
    if out.returncode != 0:
        raise RuntimeError(f"trial failed: {result.get('error')}\n{out.stderr[-2000:]}")
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ladder", choices=sorted(LADDERS), default="quickstart")
    ap.add_argument("--family", choices=["in-context", "cross-attention"], default="in-context")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rungs", type=int, nargs="*", help="depths to run (default: all)")
    args = ap.parse_args()
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.machine()
    for depth, width, heads in LADDERS[args.ladder]:
        if args.rungs and depth not in args.rungs:
            continue
        model = config(args.ladder, depth, width, heads, args.family)
        with tempfile.TemporaryDirectory() as tmp:
            figures = {}
            for name, seed, steps in (("cold", 0, 3), ("cached", 1, 4)):
                cfg = TrainConfig(
                    model=model,
                    steps=steps,
                    global_batch_size=args.batch,
                    seed=seed,
                    compile=True,
                    compile_cache=f"{tmp}/store",
                    eval_samples=0,
                    results=f"{tmp}/{name}.json",
                    termination_log=None,
                )
                figures[name] = trial(cfg)
            tarball = next(Path(tmp, "store").iterdir())
            cold, cached = figures["cold"], figures["cached"]
            print(
                json.dumps(
                    {
                        "bench": "compile_cache",
                        "ladder": args.ladder,
                        "family": args.family,
                        "depth": depth,
                        "params": model.params().total,
                        "batch": args.batch,
                        "device": device,
                        "cold_train_seconds": cold["train_seconds"],
                        "cached_train_seconds": cached["train_seconds"],
                        "cold_cache_misses": cold["compile_cache_misses"],
                        "cached_cache_misses": cached["compile_cache_misses"],
                        "cached_status": cached["compile_cache"],
                        "tarball_mib": round(tarball.stat().st_size / 2**20, 2),
                        "speedup": round(cold["train_seconds"] / cached["train_seconds"], 2),
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
