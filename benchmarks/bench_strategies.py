"""What each sweep strategy needs in compute for a given precision of the N* exponent (simulation).

For each strategy (the full grid; WSD branches; adaptive ladders; both) on a planned grid, many
simulated sweeps at the given noise give the strategy's compute (as it accounts it: branches
charge their shared stable run once) and the scatter (sd) of its fitted N* exponent. Precision is
bought with replicates, which divide the noise by sqrt(r) and multiply the compute by r: reaching
the target (|error| <= tolerance in `share` of sweeps, i.e. sd <= tolerance / z) takes
r = (sd / sd_target)^2, and `compute_fraction` is the strategy's compute times its r, over the full
grid's compute times the full grid's r. A second simulation at the noise that r implies checks it:
`within_at_r` is the share of sweeps that land within the tolerance there, `coverage_at_r` how
often the reported 95% interval held the truth.

A WSD branch's loss is drawn from the law like a trial trained from scratch (what branches are
built to give; whether they do is measured on real training, not here).

    python -m benchmarks.bench_strategies                       # paper in-context grid, 0.5% noise
    python -m benchmarks.bench_strategies --runs 400 --file examples/paper-cross-attention.yaml
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from isoflop import api
from isoflop.sweep.forecast import Law, simulate_strategy, truth
from isoflop.sweep.plan import plan
from isoflop.sweep.strategy import Adaptive, Wsd, densified

# name: (adaptive ladder, WSD branches, budgets as a multiple of the grid's, log-spaced over its
# range: branches make a budget below the largest cost only its cooldowns)
STRATEGIES: dict[str, tuple[Adaptive | None, Wsd | None, int]] = {
    "full": (None, None, 1),
    "wsd-0.2": (None, Wsd(0.2), 1),
    "wsd-0.1": (None, Wsd(0.1), 1),
    "wsd-0.2-2x-budgets": (None, Wsd(0.2), 2),
    "wsd-0.1-4x-budgets": (None, Wsd(0.1), 4),
    "adaptive-5-adjacent": (Adaptive(rungs=5, stride=1), None, 1),
    "adaptive-5-stride-3": (Adaptive(rungs=5, stride=3), None, 1),
    "adaptive-4-stride-4": (Adaptive(rungs=4, stride=4), None, 1),
    "adaptive-5-stride-3+wsd-0.1": (Adaptive(rungs=5, stride=3), Wsd(0.1), 1),
    "adaptive-5-stride-3+wsd-0.1-4x-budgets": (Adaptive(rungs=5, stride=3), Wsd(0.1), 4),
}


def z_of(share: float) -> float:
    return statistics.NormalDist().inv_cdf(0.5 + share / 2)


def measure(
    spec: api.ScalingSweepSpec,
    law: Law,
    noise: float,
    runs: int,
    bootstrap: int,
    adaptive: Adaptive | None,
    wsd: Wsd | None,
    true: float,
    tolerance: float,
) -> dict[str, float]:
    r = simulate_strategy(spec, law, noise, runs, bootstrap, adaptive, wsd)
    v, lo, hi = (getattr(r.estimates, k)["params"] for k in ("value", "low", "high"))
    ok = np.isfinite(v)
    has = ok & np.isfinite(lo) & np.isfinite(hi)
    return {
        "compute": float(np.mean(r.compute[ok])),
        "trials": float(np.mean(r.trials[ok])),
        "bias": float(np.mean(v[ok]) - true),
        "sd": float(np.std(v[ok], ddof=1)),
        "within": float(np.mean(np.abs(v[ok] - true) <= tolerance)),
        "coverage": float(np.mean((lo[has] <= true) & (true <= hi[has])))
        if has.any()
        else math.nan,
        "failed": r.estimates.failed,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--file", default="examples/paper-in-context.yaml")
    ap.add_argument("--noise", type=float, default=0.005)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--tolerance", type=float, default=0.02)
    ap.add_argument("--share", type=float, default=0.95)
    ap.add_argument("--strategies", nargs="*", choices=sorted(STRATEGIES), default=list(STRATEGIES))
    ap.add_argument("--out", help="default: benchmarks/results/strategies-<date>.jsonl")
    args = ap.parse_args()
    spec = api.load_sweep(args.file).spec
    law = Law()
    sd_target = args.tolerance / z_of(args.share)
    out = Path(args.out or f"benchmarks/results/strategies-{datetime.date.today()}.jsonl")
    rows: list[dict[str, Any]] = []
    full_need = None
    for name in ["full", *[s for s in args.strategies if s != "full"]]:
        adaptive, wsd, factor = STRATEGIES[name]
        grid = densified(spec, factor)
        true = truth(plan(grid), law).exponents["params"]
        start = time.perf_counter()
        base = measure(
            grid, law, args.noise, args.runs, args.bootstrap, adaptive, wsd, true, args.tolerance
        )
        replicates = max((base["sd"] / sd_target) ** 2, 1.0)
        at_r = measure(
            grid,
            law,
            args.noise / math.sqrt(replicates),
            args.runs,
            args.bootstrap,
            adaptive,
            wsd,
            true,
            args.tolerance,
        )
        need = base["compute"] * replicates
        full_need = full_need or need
        row = {
            "bench": "strategies",
            "grid": args.file,
            "strategy": name,
            "budgets": len(grid.budgets),
            "noise": args.noise,
            "runs": args.runs,
            "true_exponent": round(true, 5),
            "compute_at_r1": base["compute"],
            "trials_at_r1": round(base["trials"], 2),
            "bias": round(base["bias"], 5),
            "sd": round(base["sd"], 5),
            "within_at_r1": round(base["within"], 4),
            "coverage_at_r1": round(base["coverage"], 4),
            "replicates_needed": round(replicates, 2),
            "within_at_r": round(at_r["within"], 4),
            "coverage_at_r": round(at_r["coverage"], 4),
            "compute_needed": need,
            "compute_fraction": round(need / full_need, 4),
            "failed": base["failed"] + at_r["failed"],
            "seconds": round(time.perf_counter() - start, 1),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
