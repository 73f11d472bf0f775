"""Forecast spec.confirm before spending: over simulated sweeps of this grid on a known law, how
wide the confirmation's prediction interval will be, whether it holds one trial as often as it
claims, and what it can tell apart.

Each simulated sweep is fitted as the operator fits it (both methods), the model nearest N* is
chosen at each confirmation budget, its loss predicted with its interval (isoflop.sweep.confirm),
and one trial of that model drawn from the law with the same noise. The interval's half-width is
also given as compute: a loss that misses by less than what this factor of compute buys on the
fitted L*(C) cannot be told from a hit. `benchmarks/bench_calibration.py --confirm` runs the same
simulations on held-out laws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from isoflop import api
from isoflop.fit import Points, analyze
from isoflop.sweep.confirm import predict
from isoflop.sweep.forecast import Law, Progress
from isoflop.sweep.plan import format_flops, plan


@dataclass(frozen=True)
class ConfirmForecast:
    """One confirmation budget over the simulated sweeps."""

    budget: float
    decades: float  # beyond the grid's largest budget
    runs: int  # simulated sweeps whose confirmation had an interval
    failed: int  # simulated sweeps that gave no law, or no interval
    coverage: float  # share of intervals that held the simulated trial
    surface_coverage: float  # share of surface intervals that held the law itself
    bias: float  # mean relative error of the predicted loss against the law
    spread: float  # its standard deviation over sweeps
    half_width: float  # mean relative half-width of the prediction interval
    form_error: float  # mean relative error added for the surface's form
    compute_factor: float  # the compute whose loss gain on L*(C) equals one half-width
    params: float  # median parameters of the chosen model
    unchecked: float  # share of sweeps whose own check could not vouch for the form this far

    @property
    def calibrated(self) -> bool:
        return self.coverage >= 0.90

    def verdict(self) -> str:
        where = f"at {format_flops(self.budget)} ({self.decades:.2f} decades above the grid)"
        if not self.runs:
            return f"{where}: no simulated sweep gave a prediction interval"
        said = (
            f"{where}: the prediction interval is +-{self.half_width:.2%} of the loss; a "
            f"measured loss that misses by less than what {self.compute_factor:.2g}x compute buys "
            f"cannot be told from a hit. It held the simulated trial in {self.coverage:.0%} of "
            f"{self.runs} sweeps"
        )
        if self.unchecked > 0.5:
            said += (
                f"; in {self.unchecked:.0%} of them the grid's own check could not see a drift "
                "of the surface's form as large as the interval this far out: the interval "
                "assumes the form holds"
            )
        if not self.calibrated:
            said += (
                " (under 90%: the fitted surface extrapolates this far with a bias of "
                f"{self.bias:+.2%}; confirm nearer the grid, or add a larger budget to it)"
            )
        return said


def simulate_confirm(
    spec: api.ScalingSweepSpec,
    law: Law,
    noise: float,
    runs: int,
    bootstrap: int,
    seed: int = 0,
    progress: Progress | None = None,
) -> list[ConfirmForecast]:
    """spec.confirm's predictions over `runs` simulated sweeps of this grid on `law`."""
    if not spec.confirm:
        return []
    trials = plan(spec).trials
    if not trials:
        raise ValueError("the plan has no feasible trial to simulate")
    base = Points.from_rows(
        {"budget": t.budget, "params": float(t.params), "tokens": float(t.tokens), "loss": 1.0}
        for t in trials
    )
    clean = law(base.params, base.tokens)
    rng = np.random.default_rng(seed)
    rows: dict[float, list[tuple[float, ...]]] = {c: [] for c in spec.confirm}
    failed = dict.fromkeys(spec.confirm, 0)
    for r in range(runs):
        points = base.with_loss(clean * np.exp(noise * rng.standard_normal(len(clean))))
        try:
            a = analyze(points, method="both", bootstrap=bootstrap, seed=seed + r)
        except ValueError:
            a = None
        for c, got in zip(spec.confirm, predict(spec, a, points, spec.confirm), strict=True):
            if (
                a is None
                or got.loss_interval is None
                or got.surface_interval is None
                or got.predicted_loss is None
                or got.params is None
                or got.tokens is None
            ):
                failed[c] += 1
                continue
            true = float(law(got.params, got.tokens))
            trial = true * math.exp(noise * rng.standard_normal())
            pi, ci = got.loss_interval, got.surface_interval
            half = (pi.high - pi.low) / 2 / got.predicted_loss
            decay = abs(a.laws["loss"].exponent) if a.laws else math.nan
            rows[c].append(
                (
                    float(pi.low <= trial <= pi.high),
                    float(ci.low <= true <= ci.high),
                    got.predicted_loss / true - 1,
                    half,
                    got.form_error or 0.0,
                    math.exp(half / decay) if decay > 0 else math.inf,
                    float(got.params),
                    float("assumes the form holds" in (got.note or "")),
                )
            )
        if progress is not None:
            progress(1)
    top = max(spec.budgets)
    out = []
    for c, found in rows.items():
        v = np.array(found) if found else np.full((0, 8), np.nan)
        ok = len(v) > 0
        out.append(
            ConfirmForecast(
                budget=c,
                decades=math.log10(c / top),
                runs=len(v),
                failed=failed[c],
                coverage=float(v[:, 0].mean()) if ok else math.nan,
                surface_coverage=float(v[:, 1].mean()) if ok else math.nan,
                bias=float(v[:, 2].mean()) if ok else math.nan,
                spread=float(v[:, 2].std(ddof=1)) if len(v) > 1 else math.nan,
                half_width=float(v[:, 3].mean()) if ok else math.nan,
                form_error=float(v[:, 4].mean()) if ok else math.nan,
                compute_factor=float(np.median(v[:, 5])) if ok else math.nan,
                params=float(np.median(v[:, 6])) if ok else math.nan,
                unchecked=float(v[:, 7].mean()) if ok else math.nan,
            )
        )
    return out


def format_confirm(rows: list[ConfirmForecast], runs: int, noise: float) -> str:
    lines = [
        f"Confirmation (spec.confirm), {runs} simulated sweeps at {noise:.2%} noise, fitted as "
        "the operator fits them:"
    ]
    lines += [f"  {r.verdict()}." for r in rows]
    return "\n".join(lines)
