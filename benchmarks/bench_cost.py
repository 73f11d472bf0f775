"""Calibrates `isoflop plan`'s GPU-hour estimate: estimated against measured, trial by trial.

What a user does, then what the sweep really took:

1. a short pilot of the trainer's own loop on every other rung of the sweep's ladder, on this
   machine, with the threads (or GPU) a trial gets, gives the MFU by model size (JSON lines with
   `params` and `mfu`, as `bench_trainer.py` writes them);
2. `isoflop plan FILE --mfu-curve PILOT --peak-tflops PEAK --json` estimates each trial's time;
3. `isoflop run FILE` trains the sweep for real, and each trial's `result.json` says how long its
   training took (`train_seconds`, warm-up included) and its whole process (`wall_seconds`).

One JSON line per trial (estimated and measured seconds, their ratio, whether its rung was piloted
or interpolated), and a summary line per estimator: the curve, and a single MFU measured at the
middle rung (what one figure gives; the old flat 40% is the same estimator with a guessed figure).
The ratio measured/estimated is the calibration: 1.0 is exact, its spread is the per-trial error.

On a CPU there is no datasheet peak: `--peak-tflops` is a nominal 1.0, which cancels out (the
estimate is FLOPs / (MFU x peak) = FLOPs / achieved FLOP/s).

    python -m benchmarks.bench_cost                                 # the quickstart, ~6 min
    python -m benchmarks.bench_cost examples/quickstart.yaml --out benchmarks/results/x.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.bench_trainer import WindowRates
from isoflop import api
from isoflop.sweep.plan import plan
from isoflop.sweep.trials import train_config
from isoflop_trainer.components.runtime import setup
from isoflop_trainer.config import peak_bf16_flops
from isoflop_trainer.trainer import Trainer


def pilot(sweep: api.ScalingSweep, window: int) -> list[dict[str, Any]]:
    """The trainer's loop on every other rung (the smallest and largest always): achieved FLOP/s
    over its last two logging windows of `window` steps, warm-up excluded."""
    p = plan(sweep.spec)
    first: dict[str, Any] = {}
    for t in p.trials:  # one trial per rung: its batch, precision and compile settings
        first.setdefault(t.rung, t)
    rungs = sorted(first.values(), key=lambda t: t.params)
    chosen = rungs[::2] if len(rungs) % 2 else [*rungs[::2], rungs[-1]]
    out = []
    for t in chosen:
        cfg = dataclasses.replace(
            train_config(sweep.spec, sweep.name, t, termination_log=None),
            steps=1 + 3 * window,
            warmup_steps=0,
            log_every=window,
            eval_samples=0,
            likelihood_samples=0,
            fid_samples=0,
        )
        rates = WindowRates()
        result, code = Trainer(cfg, setup(), rates).fit()
        if code != 0:
            raise RuntimeError(f"the pilot of {t.rung} failed: {result.get('error')}")
        tokens_per_second = statistics.fmean(rates.rates[-2:])
        flops_per_token = t.flops_exact / (t.samples * cfg.model.tokens_per_sample)
        out.append(
            {
                "rung": t.rung,
                "params": t.params,
                "flops_per_second": tokens_per_second * flops_per_token,
            }
        )
        print(f"pilot {t.rung}: {out[-1]['flops_per_second'] / 1e9:.2f} GFLOP/s", file=sys.stderr)
    return out


def estimate(file: str, curve: Path, peak_tflops: float) -> dict[str, float]:
    """Each trial's estimated seconds, from the product's own command."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "isoflop.cli",
            "plan",
            file,
            "--json",
            "--mfu-curve",
            str(curve),
            "--peak-tflops",
            str(peak_tflops),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return {t["id"]: t["gpu_hours"] * 3600 for t in json.loads(out.stdout)["trials"]}


def summary(estimator: str, rows: list[dict[str, Any]], key: str) -> dict[str, Any]:
    ratios = [r[key] for r in rows]
    logs = [abs(math.log(x)) for x in ratios]
    return {
        "bench": "cost-summary",
        "estimator": estimator,
        "trials": len(rows),
        "total_measured_seconds": round(sum(r["measured_train_seconds"] for r in rows), 2),
        "total_ratio": round(
            sum(r["measured_train_seconds"] for r in rows)
            / sum(r["measured_train_seconds"] / r[key] for r in rows),
            4,
        ),
        "median_ratio": round(statistics.median(ratios), 4),
        "min_ratio": round(min(ratios), 4),
        "max_ratio": round(max(ratios), 4),
        "median_abs_log_ratio": round(statistics.median(logs), 4),
        "within_25pct": round(sum(abs(x - 1) <= 0.25 for x in ratios) / len(ratios), 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file", nargs="?", default="examples/quickstart.yaml")
    ap.add_argument("--window", type=int, default=20, help="pilot steps per logging window")
    ap.add_argument("--peak-tflops", type=float, help="default: the GPU's, or a nominal 1 on CPU")
    ap.add_argument("--out", help="default: benchmarks/results/cost-<device>-<date>.jsonl")
    args = ap.parse_args()
    sweep = api.load_sweep(args.file)
    cuda = torch.cuda.is_available()
    device = torch.cuda.get_device_name() if cuda else "cpu"
    peak = args.peak_tflops or ((peak_bf16_flops(device) or 1e12) / 1e12 if cuda else 1.0)
    # the threads a local trial gets (isoflop.local.backends.LocalBackend)
    threads = max(1, (os.cpu_count() or 1) // max(sweep.spec.parallelism, 1))
    torch.set_num_threads(threads)
    date = datetime.date.today().isoformat()
    out_path = Path(args.out or f"benchmarks/results/cost-{'gpu' if cuda else 'cpu'}-{date}.jsonl")

    with tempfile.TemporaryDirectory() as tmp:
        piloted = pilot(sweep, args.window)
        curve, middle = Path(tmp) / "pilot.jsonl", Path(tmp) / "middle.jsonl"
        mid = piloted[len(piloted) // 2]
        lines = [
            {"params": r["params"], "mfu": r["flops_per_second"] / (peak * 1e12)} for r in piloted
        ]
        curve.write_text("".join(json.dumps(x) + "\n" for x in lines))
        middle.write_text(json.dumps(lines[len(lines) // 2]) + "\n")
        by_curve = estimate(args.file, curve, peak)
        by_middle = estimate(args.file, middle, peak)

        run_dir = Path(tmp) / "run"
        start = time.time()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "isoflop.cli",
                "run",
                args.file,
                "--run-dir",
                str(run_dir),
                "--plain",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        sweep_seconds = time.time() - start
        rows = []
        piloted_rungs = {r["rung"] for r in piloted}
        for t in plan(sweep.spec).trials:
            result = json.loads((run_dir / "trials" / t.id / "result.json").read_text())
            measured = float(result["train_seconds"])
            rows.append(
                {
                    "bench": "cost",
                    "sweep": sweep.name,
                    "device": device,
                    "threads": None if cuda else threads,
                    "trial": t.id,
                    "rung": t.rung,
                    "params": t.params,
                    "piloted": t.rung in piloted_rungs,
                    "estimated_seconds": round(by_curve[t.id], 3),
                    "measured_train_seconds": measured,
                    "measured_wall_seconds": float(result["wall_seconds"]),
                    "ratio": round(measured / by_curve[t.id], 4),
                    "ratio_single_mfu": round(measured / by_middle[t.id], 4),
                }
            )

    lines_out: list[dict[str, Any]] = [*rows]
    lines_out.append(summary("mfu-curve", rows, "ratio"))
    lines_out.append(
        summary("mfu-curve, interpolated rungs", [r for r in rows if not r["piloted"]], "ratio")
    )
    lines_out.append(summary(f"single mfu at {mid['rung']}", rows, "ratio_single_mfu"))
    lines_out.append(
        {
            "bench": "cost-sweep",
            "sweep": sweep.name,
            "device": device,
            "parallelism": sweep.spec.parallelism,
            "estimated_seconds_sum": round(sum(by_curve.values()), 2),
            "train_seconds_sum": round(sum(r["measured_train_seconds"] for r in rows), 2),
            "wall_seconds_sum": round(sum(r["measured_wall_seconds"] for r in rows), 2),
            "sweep_seconds": round(sweep_seconds, 2),
            "pilot": piloted,
        }
    )
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with out_path.open("a") as f:
        for line in lines_out:
            f.write(json.dumps(line) + "\n")
    for line in lines_out[len(rows) :]:
        print(json.dumps({k: v for k, v in line.items() if k != "pilot"}))


if __name__ == "__main__":
    main()
