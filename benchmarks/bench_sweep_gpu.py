"""A sweep's GPU efficiency: each rung of a reduced paper ladder trained for a fixed number of
steps by the trainer itself (its own process, as `isoflop run` launches it), alone on the device
and packed k to it (k from isoflop.sweep.packing), with the sweep-level MFU of both.

Per rung: the trainer's steady MFU (its result: warm-up windows left out) and the wall MFU (the
rung's FLOPs over the processes' whole wall time, start-up and compilation included). Packed, the
k processes run at once and their FLOPs add. The sweep figure weights every rung by equal FLOPs,
as one isoFLOP budget does (each trial of a budget spends the same compute): its time is the sum
of C / (MFU_r x peak), so `sweep_mfu` = rungs / sum(1 / MFU_r), the harmonic mean. The baseline,
measured in the same run, is the unpacked sweep; `speedup` is packed over it.

    python -m benchmarks.bench_sweep_gpu                                 # GPU: bf16, compiled
    python -m benchmarks.bench_sweep_gpu --device cpu --depths 2 3 --steps 6 --batch 16 \\
        --peak-tflops 1 --latent 4 16 16                                 # the method, on a CPU
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from isoflop import api
from isoflop.sweep.packing import Packing
from isoflop.sweep.plan import plan
from isoflop.sweep.trials import train_config

ROOT = Path(__file__).resolve().parents[1]


def harmonic(values: list[float]) -> float:
    """The MFU of a sweep that spends equal FLOPs on rungs of these MFUs."""
    if not values or any(not v > 0 for v in values):
        return math.nan
    return len(values) / sum(1 / v for v in values)


def spec_for(args: argparse.Namespace) -> api.ScalingSweepSpec:
    m = api.yaml_load((ROOT / "examples" / "paper-in-context.yaml").read_text())
    s = m["spec"]
    s["model"]["depths"] = args.depths
    s["resources"] = {
        "gpusPerNode": 1,
        "packing": {"maxTrialsPerGpu": args.max_per_gpu},
        "gpuMemoryGiB": args.gpu_memory_gib,
    }
    s["training"]["globalBatchSize"] = args.batch
    s["training"]["compile"] = args.device == "cuda"
    if args.compile_mode:
        s["training"]["compileMode"] = args.compile_mode
    if args.latent:
        s["data"]["latentShape"] = args.latent
    s["budgets"] = [1e18]
    s.pop("strategy", None)
    s.pop("fit", None)  # one budget: nothing to fit or hold out
    s["data"]["source"] = args.data
    s["data"].pop("validationSource", None)
    return api.parse_sweep(m).spec


def run_trainers(configs: list[dict[str, Any]], workdir: Path, device: str) -> tuple[float, list]:
    """Start one trainer process per config at once; wall seconds until all end, and results."""
    env = {**os.environ}
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // len(configs)))
    procs = []
    start = time.perf_counter()
    for i, cfg in enumerate(configs):
        path = workdir / f"config-{i}.json"
        path.write_text(json.dumps(cfg))
        log = open(workdir / f"log-{i}.txt", "wb")  # noqa: SIM115 - closed below
        cmd = [sys.executable, "-m", "isoflop_trainer.cli", "train", "--config", str(path)]
        procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log))
    codes = [p.wait() for p, _ in procs]
    wall = time.perf_counter() - start
    for _, log in procs:
        log.close()
    results = []
    for i, (cfg, code) in enumerate(zip(configs, codes, strict=True)):
        if code != 0:
            tail = (workdir / f"log-{i}.txt").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"trainer {i} exited {code}:\n{tail}")
        results.append(json.loads(Path(cfg["results"]).read_text()))
    return wall, results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depths", type=int, nargs="+", default=[2, 4, 6, 8, 12, 15])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=256, help="global batch of every rung")
    ap.add_argument("--latent", type=int, nargs=3, help="C H W (default: the paper's 4 32 32)")
    ap.add_argument("--max-per-gpu", type=int, default=8)
    ap.add_argument("--data", default="procedural://shapes", help="the trainer's data source")
    ap.add_argument("--gpu-memory-gib", type=float, default=80)
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument(
        "--compile-mode",
        choices=[
            "auto",
            "default",
            "reduce-overhead",
            "max-autotune",
            "max-autotune-no-cudagraphs",
        ],
        help="torch.compile's mode (auto: CUDA graphs for the small rungs; default: its default)",
    )
    ap.add_argument("--peak-tflops", type=float, help="default: the GPU's bf16 peak")
    ap.add_argument("--out", help="default: benchmarks/results/sweep-gpu-<date>.jsonl")
    args = ap.parse_args()
    spec = spec_for(args)
    policy = Packing.of(spec)
    device_name = "cpu"
    peak = args.peak_tflops * 1e12 if args.peak_tflops else None
    if args.device == "cuda":
        import torch

        from isoflop_trainer.config import peak_bf16_flops

        device_name = torch.cuda.get_device_name(0)
        peak = peak or peak_bf16_flops(device_name)
    if peak is None:
        raise SystemExit("give --peak-tflops: the device's peak is not known")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for trial in plan(spec).trials:
            k = policy.per_gpu(trial)
            row: dict[str, Any] = {
                "bench": "sweep-gpu",
                "device": device_name,
                "rung": trial.rung,
                "params": trial.params,
                "batch": trial.batch_size,
                "steps": args.steps,
                "per_gpu": k,
            }
            for mode, count in (("alone", 1), ("packed", k)):
                if mode == "packed" and k == 1:
                    row["packed"] = row["alone"]
                    continue
                work = Path(tmp) / f"{trial.rung}-{mode}"
                work.mkdir()
                base = train_config(spec, "bench", trial, termination_log=None)
                configs = [
                    replace(
                        base,
                        steps=args.steps,
                        seed=i,
                        eval_samples=8,
                        log_every=max(args.steps // 10, 1),
                        results=str(work / f"result-{i}.json"),
                    ).to_dict()
                    for i in range(count)
                ]
                wall, results = run_trainers(configs, work, args.device)
                flops = sum(r["flops"] for r in results)
                steady = sum(r["tokens_per_second"] for r in results) / trial.tokens_per_sample
                row[mode] = {
                    "processes": count,
                    "wall_seconds": round(wall, 2),
                    "wall_mfu": round(flops / (wall * peak), 4),
                    "steady_mfu": round(steady * trial.flops_per_sample / peak, 4),
                    "micro_batch": base.micro_batch_size or trial.batch_size,
                    "compile_mode": base.compile_mode,
                }
            rows.append(row)
            print(json.dumps(row), flush=True)
    summary: dict[str, Any] = {
        "bench": "sweep-gpu",
        "summary": True,
        "device": device_name,
        "rungs": [r["rung"] for r in rows],
        "steps": args.steps,
        "peak_tflops": peak / 1e12,
        "compile_mode": args.compile_mode,
        "max_per_gpu": args.max_per_gpu,
    }
    for kind in ("steady", "wall"):
        alone = harmonic([r["alone"][f"{kind}_mfu"] for r in rows])
        packed = harmonic([r["packed"][f"{kind}_mfu"] for r in rows])
        summary[f"{kind}_sweep_mfu_alone"] = round(alone, 4)
        summary[f"{kind}_sweep_mfu_packed"] = round(packed, 4)
        summary[f"{kind}_speedup"] = round(packed / alone, 3)
    summary["sweep_mfu"] = summary["steady_sweep_mfu_packed"]
    print(json.dumps(summary), flush=True)
    out = Path(args.out or f"benchmarks/results/sweep-gpu-{datetime.date.today()}.jsonl")
    if args.device == "cpu" and not args.out:
        out = out.with_name(out.name.replace("sweep-gpu", "sweep-cpu"))
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as f:
        for row in [*rows, summary]:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
