"""Fitting speed: parabolas + power laws + 1,000 bootstrap resamples on 6 budgets x 14 sizes.

Prints one JSON line per figure. The baseline, measured in the same run, is the straightforward
implementation: a Python loop over resamples calling np.polyfit per budget and per law.
Targets (shared/DESIGN.md, issue 12), on 2 cores in the default environment (the fits pin BLAS
to one thread themselves): the parabola method with 1,000 resamples under 0.2 s; the parametric
fit plus 1,000 resamples under 10 s.

    .venv/bin/python benchmarks/bench_fit.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np

from isoflop.fit import Points, analyze, fit_parametric

BUDGETS = [1e17, 3e17, 6e17, 1e18, 3e18, 6e18]
SIZES = 14


def sweep(seed: int = 0) -> Points:
    """6 budgets x 14 sizes on a Chinchilla-shaped surface with 0.5% noise."""
    e, a, b, alpha, beta = 1.69, 406.4, 410.7, 0.34, 0.28
    g = (alpha * a / (beta * b)) ** (1 / (alpha + beta))
    rng = np.random.default_rng(seed)
    rows = []
    for c in BUDGETS:
        n_opt = g * (c / 6) ** (beta / (alpha + beta))
        for dx in np.linspace(-1.0, 1.0, SIZES):
            n = n_opt * 10**dx
            d = c / (6 * n)
            loss = (e + a / n**alpha + b / d**beta) * np.exp(rng.normal(0, 0.005))
            rows.append({"budget": c, "params": n, "tokens": d, "loss": loss})
    return Points.from_rows(rows)


def naive_bootstrap(points: Points, reps: int, seed: int) -> list[float]:
    """The same statistics with a loop of np.polyfit calls (the baseline)."""
    rng = np.random.default_rng(seed)
    budgets = points.budgets
    exps: list[tuple[float, float, float]] = []
    for _ in range(reps):
        opts = []
        for c in budgets:
            sel = points.budget == c
            x, y = np.log10(points.params[sel]), points.loss[sel]
            idx = rng.integers(0, len(x), len(x))
            if len(np.unique(idx)) < 3:
                continue
            a2, a1, a0 = np.polyfit(x[idx], y[idx], 2)
            if a2 <= 0:
                continue
            xs = -a1 / (2 * a2)
            opts.append((np.log10(c), xs, np.log10(c) - np.log10(6) - xs, a0 - a1 * a1 / (4 * a2)))
        if len(opts) >= 2:
            o = np.array(opts)
            exps.append(
                tuple(
                    np.polyfit(o[:, 0], col, 1)[0] for col in (o[:, 1], o[:, 2], np.log10(o[:, 3]))
                )
            )
    arr = np.array(exps)
    return [float(np.percentile(arr[:, i], 2.5)) for i in range(3)]


def timed(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    points = sweep()
    env = {"machine": platform.machine(), "cpus": os.cpu_count(), "points": len(points)}

    parabola = timed(lambda: analyze(points, method="parabola", bootstrap=1000), args.repeats)
    baseline = timed(lambda: naive_bootstrap(points, 1000, 0), max(1, args.repeats // 2))
    print(
        json.dumps(
            {
                "bench": "fit.parabola_powerlaws_bootstrap1000",
                "seconds": round(parabola, 4),
                "baseline_seconds": round(baseline, 4),
                "speedup_vs_polyfit_loop": round(baseline / parabola, 1),
                "target_seconds": 0.2,
                **env,
            }
        )
    )

    single = timed(lambda: fit_parametric(points), args.repeats)
    print(json.dumps({"bench": "fit.parametric_no_bootstrap", "seconds": round(single, 4), **env}))
    boot = timed(lambda: fit_parametric(points, bootstrap=1000), 1)
    print(
        json.dumps(
            {
                "bench": "fit.parametric_bootstrap1000",
                "seconds": round(boot, 3),
                "seconds_per_resample": round((boot - single) / 1000, 5),
                "target_seconds": 10.0,
                **env,
            }
        )
    )
    both = timed(lambda: analyze(points, bootstrap=1000, predict=[1e21], hold_out="largest"), 1)
    print(json.dumps({"bench": "fit.analyze_both_bootstrap1000", "seconds": round(both, 3), **env}))


if __name__ == "__main__":
    main()
