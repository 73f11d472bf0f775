"""Calibration of the reported exponents: bias and 95%-interval coverage against a known truth.

Simulates the paper's in-context and cross-attention grids many times from known laws with
lognormal noise, fits every sweep as `isoflop fit` would (noise estimated from the sweep itself),
and prints one JSON line per (grid, law, noise, method): bias, scatter, RMSE, mean interval width,
its ratio to 2 x 1.96 x the scatter (1 is an interval exactly as wide as the scatter needs),
coverage of the N*, D* and L* exponents, and the share of sweeps whose interval was identified.

The baseline, measured in the same run, is the whole-ladder parabola (`--baseline-window 0`, the
method before the local fit): its rows carry method "parabola-whole-ladder".

Targets (shared/DESIGN.md, issue 12) at 0.5% noise on the paper grids for the default method:
|bias| <= 0.005, coverage in [0.90, 0.98] for the N* exponent, width ratio <= 1.5.

`--confirm C [C ...]` measures spec.confirm's prediction instead (issue 26): each simulated sweep
is fitted as the operator fits it (both methods), the model nearest N* is chosen at each budget
C, its loss predicted with its interval, and one trial of it drawn from the law with the same
noise. Rows ("bench": "calibration-confirm") give the share of intervals that held that trial
(target 0.90-0.98), the share of surface intervals that held the law itself, the bias of the
predicted loss against the law (relative), the mean relative half-width, the form-drift term,
and the share of sweeps whose own extrapolation check was too noisy to vouch for the interval.

    .venv/bin/python benchmarks/bench_calibration.py [--runs 200] [--noise 0.002 0.005 0.01]
        [--methods parabola parametric] [--out benchmarks/results/calibration-DATE.jsonl]
    .venv/bin/python benchmarks/bench_calibration.py --confirm 2.4e19 1.5e21 --noise 0.005
        --grids paper-in-context --runs 100
    .venv/bin/python benchmarks/bench_calibration.py --rates step-law mild --noise 0.005

`--rates` measures the learning rate's effect instead (issue 37): losses drawn with a basin in log
rate around a known optimum eta*(N, D) = c N^alpha D^beta (Step Law's exponents, or half of
each), its depth `--rate-depth` per squared decade, centred so that the spec's own rate is the
optimum at the grid's middle trial. Rows ("bench": "calibration-rates") give the N* exponent's
bias, scatter and coverage at that one rate for every trial ("fixed"), under the 1/width rule
("width", base width the narrowest rung) and with the tuning stage's defaults ("tuned", run
through the engine), and the stage's compute as a fraction of the grid's; the baseline in the
same run ("ideal") trains every trial at its own optimum rate, so its bias is the grid's own.
Target: with the stage, bias within 0.005 of the baseline's and coverage 0.90-0.98 at <= 20%
extra compute.

`--batches` measures the global batch's effect (issue 37): losses drawn with the Step Law rate
basin and a basin in log batch (depth `--batch-depth`) around B*(D) = c D^0.571, centred so that
the spec's own batch is the optimum at the grid's middle trial. Rows ("bench":
"calibration-batches") give the N* exponent's bias and coverage at one rate and batch ("fixed"),
with the stage tuning the rate alone ("rates") and the rate then the batch over
globalBatchSize x 2^(-2..2) ("both"), against every trial at its own optimum ("ideal"); and for
"both" the batch law's D exponent: its bias and its 95% interval's coverage of 0.571.

    .venv/bin/python benchmarks/bench_calibration.py --batches --noise 0.005
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import TextIO

from threadpoolctl import threadpool_limits

from isoflop import api
from isoflop.fit.parabola import DEFAULT_WINDOW
from isoflop.sweep.forecast import Law, simulate, summarize, truth
from isoflop.sweep.forecast_batches import centred_batches, simulate_batches
from isoflop.sweep.forecast_rates import STEP_LAW_EXPONENTS, centred_basin, simulate_rates
from isoflop.sweep.plan import plan

ROOT = Path(__file__).resolve().parents[1]
GRIDS = {
    "paper-in-context": ROOT / "examples" / "paper-in-context.yaml",
    "paper-cross-attention": ROOT / "examples" / "paper-cross-attention.yaml",
}
PAPER = Law()
LAWS = {
    # reproduces the paper's in-context N*, D* and L* laws (isoflop.sweep.forecast.Law's defaults)
    "paper-in-context": PAPER,
    # the cross-attention-like law: N* exponent about 0.535, steep isoFLOP curves
    "cross-attention-like": Law(0.35, 20.3, 1000.0, 0.33, 0.38),
    # the paper law with every optimum 3x larger: near the top of the ladder at large budgets
    "off-centre": Law(PAPER.E, PAPER.A * 3 ** (PAPER.alpha + PAPER.beta), PAPER.B, 0.2, 0.26307),
    # not of the parametric form: L = E + (A/N^alpha + B/D^beta)^gamma
    "gamma-0.7": Law(0.45, PAPER.A, PAPER.B, PAPER.alpha, PAPER.beta, 0.7),
}


def rows(
    grid: str,
    law_name: str,
    noise: float,
    method: str,
    runs: int,
    bootstrap: int,
    window: float | None,
) -> list[dict[str, object]]:
    spec = api.load_sweep(GRIDS[grid]).spec
    true = truth(plan(spec), LAWS[law_name]).exponents
    fit_method = "parabola" if method.startswith("parabola") else method
    start = time.perf_counter()
    est = simulate(spec, LAWS[law_name], noise, runs, bootstrap, (fit_method,), window, seed=1)
    seconds = time.perf_counter() - start
    out: list[dict[str, object]] = []
    for e in summarize(est[fit_method], true, fit_method):
        needed = 2 * 1.96 * e.spread
        out.append(
            {
                "bench": "calibration",
                "grid": grid,
                "law": law_name,
                "noise": noise,
                "method": method,
                "window": window,
                "exponent": e.law,
                "true": round(e.true, 5),
                "mean": round(e.mean, 5),
                "bias": round(e.bias, 5),
                "spread": round(e.spread, 5),
                "rmse": round(math.hypot(e.bias, e.spread), 5),
                "interval_width": round(e.interval_width, 5),
                "width_ratio": round(e.interval_width / needed, 3) if needed > 0 else None,
                "coverage": None if e.coverage is None else round(e.coverage, 3),
                "identified": round(e.identified, 3),
                "runs": runs,
                "failed": est[fit_method].failed,
                "bootstrap": bootstrap,
                "seconds": round(seconds, 1),
            }
        )
    return out


def confirm_rows(
    grid: str, law_name: str, noise: float, budgets: list[float], runs: int, bootstrap: int
) -> list[dict[str, object]]:
    """spec.confirm's prediction over `runs` simulated sweeps: coverage, bias, width."""
    from isoflop.sweep.forecast_confirm import simulate_confirm

    spec = api.load_sweep(GRIDS[grid]).spec.model_copy(update={"confirm": budgets})
    start = time.perf_counter()
    found = simulate_confirm(spec, LAWS[law_name], noise, runs, bootstrap, seed=7)
    seconds = time.perf_counter() - start
    return [
        {
            "bench": "calibration-confirm",
            "grid": grid,
            "law": law_name,
            "noise": noise,
            "budget": f.budget,
            "decades_beyond_grid": round(f.decades, 3),
            "coverage_trial": round(f.coverage, 3),
            "coverage_surface": round(f.surface_coverage, 3),
            "bias": round(f.bias, 5),
            "spread": round(f.spread, 5),
            "half_width": round(f.half_width, 5),
            "form_error": round(f.form_error, 5),
            "compute_factor": round(f.compute_factor, 3),
            "params": f.params,
            "unchecked": round(f.unchecked, 3),
            "identified": f.runs,
            "runs": runs,
            "failed": f.failed,
            "bootstrap": bootstrap,
            "seconds": round(seconds, 1),
        }
        for f in found
    ]


RATE_GRIDS = {**GRIDS, "quickstart": ROOT / "examples" / "quickstart.yaml"}
# the surfaces the rate rows sample: the paper's, and for the quickstart's ladder the paper's
# moved until the ladder brackets its optima (as tests/integration/test_tuning.py does)
RATE_SURFACES = {
    "paper-in-context": PAPER,
    "paper-cross-attention": PAPER,
    "quickstart": Law(PAPER.E, 28.53, PAPER.B, PAPER.alpha, PAPER.beta),
}
# basins in log rate: Step Law's exponents, and a milder one (half of each)
BASINS = {"step-law": STEP_LAW_EXPONENTS, "mild": (-0.356, 0.154)}


def rate_rows(
    grid: str, shape: str, depth: float, noise: float, runs: int, bootstrap: int
) -> list[dict[str, object]]:
    """The N* exponent at one fixed rate, under the 1/width rule and with the tuning stage
    (its default grid around the spec's rate), on losses with a known optimum rate."""
    spec = api.load_sweep(RATE_GRIDS[grid]).spec
    surface = RATE_SURFACES[grid]
    law = replace(surface, rates=centred_basin(spec, BASINS[shape], depth))
    start = time.perf_counter()
    found = simulate_rates(spec, law, noise, runs, bootstrap, seed=11)
    seconds = time.perf_counter() - start
    return [
        {
            "bench": "calibration-rates",
            "grid": grid,
            "basin": shape,
            "depth": depth,
            "noise": noise,
            "way": f.way,
            "true": round(f.true, 5),
            "mean": round(f.mean, 5),
            "bias": round(f.bias, 5),
            "spread": round(f.spread, 5),
            "coverage": None if f.coverage is None else round(f.coverage, 3),
            "identified": round(f.identified, 3),
            "failed": f.failed,
            "stage_fraction": round(f.stage_fraction, 4),
            "runs": runs,
            "bootstrap": bootstrap,
            "seconds": round(seconds, 1),
        }
        for f in found
    ]


def batch_rows(
    grid: str, depth: float, noise: float, runs: int, bootstrap: int
) -> list[dict[str, object]]:
    """The N* exponent at one rate and batch, with the stage tuning the rate, and the rate and
    the batch; the batch law's exponent against the basin's."""
    spec = api.load_sweep(RATE_GRIDS[grid]).spec
    law = replace(
        RATE_SURFACES[grid], rates=centred_basin(spec), batches=centred_batches(spec, depth=depth)
    )
    start = time.perf_counter()
    found = simulate_batches(spec, law, noise, runs, bootstrap, seed=11)
    seconds = time.perf_counter() - start
    return [
        {
            "bench": "calibration-batches",
            "grid": grid,
            "batch_depth": depth,
            "noise": noise,
            "way": f.way,
            "true": round(f.true, 5),
            "bias": round(f.bias, 5),
            "spread": round(f.spread, 5),
            "coverage": None if f.coverage is None else round(f.coverage, 3),
            "failed": f.failed,
            "stage_fraction": round(f.stage_fraction, 4),
            "batch_true": f.batch_true,
            "batch_bias": None if f.batch_bias is None else round(f.batch_bias, 5),
            "batch_coverage": None if f.batch_coverage is None else round(f.batch_coverage, 3),
            "runs": runs,
            "bootstrap": bootstrap,
            "seconds": round(seconds, 1),
        }
        for f in found
    ]


def emit(row: dict[str, object], out: TextIO | None) -> None:
    """One JSON line to stdout, and to the --out file when given."""
    print(json.dumps(row), flush=True)
    if out:
        out.write(json.dumps(row) + "\n")
        out.flush()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--bootstrap", type=int, default=200, help="resamples per simulated fit")
    ap.add_argument("--noise", type=float, nargs="+", default=[0.002, 0.005, 0.01])
    ap.add_argument("--grids", nargs="+", default=list(GRIDS), choices=list(RATE_GRIDS))
    ap.add_argument("--laws", nargs="+", default=list(LAWS), choices=list(LAWS))
    ap.add_argument(
        "--methods",
        nargs="+",
        default=["parabola", "parabola-whole-ladder", "parametric"],
        choices=["parabola", "parabola-whole-ladder", "parametric"],
    )
    ap.add_argument("--parametric-runs", type=int, help="fewer sweeps for the slow method")
    ap.add_argument("--out", help="append JSON lines here too")
    ap.add_argument(
        "--confirm",
        type=float,
        nargs="+",
        metavar="C",
        help="calibrate spec.confirm's prediction at these budgets instead",
    )
    ap.add_argument(
        "--rates",
        nargs="+",
        choices=list(BASINS),
        help="calibrate the learning-rate ways (one rate, 1/width, the tuning stage) on losses "
        "with these basins instead",
    )
    ap.add_argument("--rate-depth", type=float, default=0.2, help="the basins' depth")
    ap.add_argument(
        "--batches",
        action="store_true",
        help="calibrate the batch ways (one batch, the stage with and without batches) instead",
    )
    ap.add_argument("--batch-depth", type=float, default=0.1, help="the batch basin's depth")
    args = ap.parse_args()
    warnings.simplefilter("ignore", RuntimeWarning)
    meta = {
        "bench": "calibration-meta",
        "date": datetime.date.today().isoformat(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "default_window": DEFAULT_WINDOW,
    }
    print(json.dumps(meta), flush=True)
    out = open(args.out, "a") if args.out else None  # noqa: SIM115
    if out:
        out.write(json.dumps(meta) + "\n")
    with threadpool_limits(limits=1):
        if args.batches:
            grids = args.grids if args.grids != list(GRIDS) else list(RATE_GRIDS)
            for grid in grids:
                for noise in args.noise:
                    for row in batch_rows(grid, args.batch_depth, noise, args.runs, args.bootstrap):
                        emit(row, out)
            if out:
                out.close()
            return
        if args.rates:
            grids = args.grids if args.grids != list(GRIDS) else list(RATE_GRIDS)
            for grid in grids:
                for shape in args.rates:
                    for noise in args.noise:
                        for row in rate_rows(
                            grid, shape, args.rate_depth, noise, args.runs, args.bootstrap
                        ):
                            emit(row, out)
            if out:
                out.close()
            return
        if args.confirm:
            for grid in args.grids:
                for law_name in args.laws:
                    for noise in args.noise:
                        for row in confirm_rows(
                            grid, law_name, noise, args.confirm, args.runs, args.bootstrap
                        ):
                            emit(row, out)
            if out:
                out.close()
            return
        for grid in args.grids:
            for law_name in args.laws:
                for noise in args.noise:
                    for method in args.methods:
                        window = None if method == "parabola-whole-ladder" else DEFAULT_WINDOW
                        runs = args.runs
                        if method == "parametric" and args.parametric_runs:
                            runs = args.parametric_runs
                        for row in rows(
                            grid, law_name, noise, method, runs, args.bootstrap, window
                        ):
                            emit(row, out)
    if out:
        out.close()


if __name__ == "__main__":
    main()
