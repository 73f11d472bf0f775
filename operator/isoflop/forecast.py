"""Forecast a sweep before running it: simulate it many times from a known law and fit each.

A user sees how wide each exponent's interval will be, and which change to the grid (a larger
budget, a rung on either end of the ladder) would narrow it most, before spending GPU hours.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from isoflop import api
from isoflop.fit import Points, analyze
from isoflop.plan import plan


@dataclass(frozen=True)
class Law:
    """L(N, D) = E + A / N^alpha + B / D^beta, the surface a simulated sweep samples."""

    E: float = 0.35
    A: float = 20.3
    B: float = 1000.0
    alpha: float = 0.30
    beta: float = 0.395  # beta / (alpha + beta) = 0.5683, close to the paper's 0.5681

    def __call__(self, params: float, tokens: float) -> float:
        return float(self.E + self.A / params**self.alpha + self.B / tokens**self.beta)

    @property
    def params_exponent(self) -> float:
        return self.beta / (self.alpha + self.beta)

    @classmethod
    def parse(cls, text: str) -> Law:
        try:
            values = [float(v) for v in text.split(",")]
        except ValueError:
            values = []
        if len(values) != 5 or any(not math.isfinite(v) or v <= 0 for v in values):
            raise ValueError(f"--law takes five positive numbers E,A,B,alpha,beta; got {text!r}")
        return cls(*values)


def simulated_loss(
    law: Law, trial_id: str, params: float, tokens: float, noise: float, seed: int
) -> float:
    """One trial's loss: the law times lognormal noise, seeded by the trial's id."""
    key = int(hashlib.sha256(f"{seed}/{trial_id}".encode()).hexdigest()[:12], 16)
    return law(params, tokens) * math.exp(noise * np.random.default_rng(key).normal())


@dataclass(frozen=True)
class ExponentForecast:
    law: str  # params, tokens, loss
    true: float | None  # known for params and tokens under C = k N D
    mean: float
    spread: float  # standard deviation of the estimate across simulated sweeps
    interval_width: float  # mean width of the reported interval
    coverage: float | None  # share of intervals that held the true exponent


@dataclass(frozen=True)
class Forecast:
    runs: int
    failed_runs: int
    exponents: tuple[ExponentForecast, ...]
    variants: tuple[tuple[str, float], ...]  # change to the grid -> N* interval width relative


def _simulate(
    spec: api.ScalingSweepSpec, law: Law, noise: float, runs: int, bootstrap: int
) -> tuple[list[dict[str, tuple[float, float, float]]], int]:
    """Per fitted run: law -> (exponent, interval low, interval high); and the unfittable count."""
    p = plan(spec)
    out, failed = [], 0
    for r in range(runs):
        rows = [
            {
                "budget": t.budget,
                "params": float(t.params),
                "tokens": float(t.tokens),
                "loss": simulated_loss(law, t.id, t.params, t.tokens, noise, r),
            }
            for t in p.trials
        ]
        try:
            a = analyze(Points.from_rows(rows), method="parabola", bootstrap=bootstrap, seed=r)
        except ValueError:
            failed += 1
            continue
        nan = (math.nan, math.nan)
        out.append(
            {
                name: (
                    fit.exponent,
                    *((fit.exponent_ci.low, fit.exponent_ci.high) if fit.exponent_ci else nan),
                )
                for name, fit in a.laws.items()
            }
        )
    return out, failed


def forecast(
    spec: api.ScalingSweepSpec,
    law: Law,
    noise: float = 0.005,
    runs: int = 20,
    bootstrap: int = 200,
    variants: bool = True,
) -> Forecast:
    """Simulate `runs` sweeps of this spec on `law`; report the exponents' spread and intervals."""
    if runs < 2:
        raise ValueError(f"a forecast needs at least 2 simulated runs, got {runs}")
    results, failed = _simulate(spec, law, noise, runs, bootstrap)
    if not results:
        raise ValueError("no simulated run could be fitted: the grid cannot produce laws")
    a = law.params_exponent
    truth = {"params": a, "tokens": 1 - a, "loss": None}
    exps = []
    for name in ("params", "tokens", "loss"):
        est = np.array([r[name][0] for r in results])
        widths = np.array([r[name][2] - r[name][1] for r in results])
        true = truth[name]
        coverage = None
        if true is not None:
            coverage = float(
                np.mean([lo <= true <= hi for _, lo, hi in (r[name] for r in results)])
            )
        exps.append(
            ExponentForecast(
                name,
                true,
                float(est.mean()),
                float(est.std(ddof=1)),
                float(np.nanmean(widths)),
                coverage,
            )
        )
    changes: list[tuple[str, float]] = []
    if variants:
        base = exps[0].interval_width
        for label, changed in grid_variants(spec):
            try:
                alt, _ = _simulate(changed, law, noise, max(runs // 2, 2), bootstrap)
            except ValueError:
                continue
            if alt:
                changes.append(
                    (
                        label,
                        float(np.nanmean([r["params"][2] - r["params"][1] for r in alt])) / base,
                    )
                )
    return Forecast(runs, failed, tuple(exps), tuple(sorted(changes, key=lambda c: c[1])))


def grid_variants(spec: api.ScalingSweepSpec) -> list[tuple[str, api.ScalingSweepSpec]]:
    """Candidate changes: one more budget above the largest, one more rung at either end."""
    out = []
    top = max(spec.budgets)
    out.append(
        (f"add budget {3 * top:.3g}", spec.model_copy(update={"budgets": [*spec.budgets, 3 * top]}))
    )
    depths = spec.model.depths
    if depths:
        bigger = spec.model.model_copy(update={"depths": [*depths, max(depths) + 1]})
        out.append((f"add depth {max(depths) + 1}", spec.model_copy(update={"model": bigger})))
        if min(depths) > 1:
            smaller = spec.model.model_copy(update={"depths": [min(depths) - 1, *depths]})
            out.append((f"add depth {min(depths) - 1}", spec.model_copy(update={"model": smaller})))
    return out


def format_forecast(f: Forecast) -> str:
    lines = [
        f"Forecast over {f.runs} simulated sweeps ({f.failed_runs} could not be fitted)",
        "  law  true      mean      spread    interval width  coverage",
    ]
    names = {"params": "N*", "tokens": "D*", "loss": "L*"}
    for e in f.exponents:
        true = "-" if e.true is None else f"{e.true:.4f}"
        cov = "-" if e.coverage is None else f"{e.coverage:.0%}"
        lines.append(
            f"  {names[e.law]:<4} {true:<9} {e.mean:<9.4f} {e.spread:<9.4f} "
            f"{e.interval_width:<15.4f} {cov}"
        )
    if f.variants:
        lines.append("What would narrow the N* exponent's interval most (width relative to now):")
        lines += [f"  {label}: {ratio:.2f}x" for label, ratio in f.variants]
    return "\n".join(lines)
