"""Forecast what the learning rate does to a sweep's laws: simulated sweeps on a known law whose
loss depends on the rate (Law.rates), trained at one rate for all, under the 1/width rule, or with
the tuning stage (spec.tuning) driven through the engine as `isoflop run` drives it.

Per way, the N* exponent's bias against the truth (the exponent of the rate-optimal surface),
its scatter and its 95% interval's coverage, and for the stage its share of the grid's compute;
the baseline ("ideal") trains every trial at its own optimum rate, so what is left of its bias is
the grid's own.
`benchmarks/bench_calibration.py --rates` runs it on the paper and quickstart grids.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from isoflop import api
from isoflop.fit import analyze
from isoflop.sweep.engine import TrialState, decide
from isoflop.sweep.forecast import Law, Progress, RateBasin, truth
from isoflop.sweep.plan import Plan, Trial, plan
from isoflop.sweep.strategy import trial_points
from isoflop.sweep.trials import learning_rate

RateWay = Literal["ideal", "fixed", "width", "tuned"]
# ideal: the baseline, every trial at its own optimum rate (the grid's bias alone)
WAYS: tuple[RateWay, ...] = ("ideal", "fixed", "width", "tuned")


@dataclass(frozen=True)
class RateForecast:
    """One way of setting the learning rate over the simulated sweeps (N* exponent)."""

    way: RateWay
    true: float
    mean: float
    bias: float
    spread: float
    coverage: float | None  # share of identified intervals that held the truth
    identified: float  # share of sweeps with an interval
    failed: int  # sweeps with no N* law (or a stage that stopped at an edge)
    stage_fraction: float  # the tuning stage's compute over the grid's (0 without one)


STEP_LAW_EXPONENTS = (-0.713, 0.307)  # Step Law's alpha (N) and beta (D), Li et al. 2025


def centred_basin(
    spec: api.ScalingSweepSpec,
    exponents: tuple[float, float] = STEP_LAW_EXPONENTS,
    depth: float = 0.2,
) -> RateBasin:
    """A basin with these exponents whose optimum at the grid's middle trial (the middle budget's
    middle rung) is the spec's own learning rate: the best one fixed rate could do near the
    middle, and the prior a user's choice of rate expresses."""
    trials = sorted(plan(spec).trials, key=lambda t: (t.budget, t.params))
    budgets = sorted({t.budget for t in trials})
    mine = [t for t in trials if t.budget == budgets[len(budgets) // 2]]
    mid = mine[len(mine) // 2]
    alpha, beta = exponents
    c = spec.training.learning_rate / (mid.params**alpha * mid.tokens**beta)
    return RateBasin(c, alpha, beta, depth)


def format_rates(rows: Sequence[RateForecast], runs: int, noise: float, basin: RateBasin) -> str:
    """The ways side by side: what one rate costs the N* exponent, and what the stage costs."""
    names = {
        "ideal": "every trial at its optimum",
        "fixed": "one rate (training.learningRate)",
        "width": "the 1/width rule",
        "tuned": "the tuning stage",
    }
    lines = [
        f"Learning rates, {runs} simulated sweeps each at {noise:.2%} noise, on losses with a "
        f"basin around eta* = {basin.coefficient:.3g} N^{basin.alpha:g} D^{basin.beta:g} (depth "
        f"{basin.depth:g} per squared decade); N* exponent, truth {rows[0].true:.3f}:",
        f"  {'rate':<34} {'bias':>8} {'scatter':>8} {'coverage':>8} {'failed':>6} {'extra':>7}",
    ]
    for r in rows:
        cov = "n/a" if r.coverage is None else f"{r.coverage:.0%}"
        extra = f"{r.stage_fraction:.1%}" if r.way == "tuned" else "-"
        lines.append(
            f"  {names[r.way]:<34} {r.bias:>+8.4f} {r.spread:>8.4f} {cov:>8} {r.failed:>6} "
            f"{extra:>7}"
        )
    lines.append(
        "  'extra': the stage's compute over the grid's; 'failed': sweeps with no N* law, or "
        "whose stage stopped at the edge of its grid."
    )
    return "\n".join(lines)


def way_spec(spec: api.ScalingSweepSpec, way: RateWay) -> api.ScalingSweepSpec:
    """The spec as that way trains it: tuning only for `tuned`, the width rule for `width`."""
    training = spec.training.model_copy(
        update={"learning_rate_scaling": "width" if way == "width" else "none"}
    )
    update: dict[str, object] = {"training": training, "parallelism": 10000}
    if way == "tuned":
        update["tuning"] = spec.tuning or api.TuningSpec()
    else:
        update["tuning"] = None
    return spec.model_copy(update=update)


def draw(law: Law, trials: Sequence[Trial], rates: Sequence[float], noise: float,
         rng: np.random.Generator) -> dict[str, float]:  # fmt: skip
    """Each trial's loss at its rate (and batch, where the law has a batch basin): the law, its
    basins, lognormal noise."""
    assert law.rates is not None
    params = np.array([float(t.params) for t in trials])
    tokens = np.array([float(t.tokens) for t in trials])
    factor = np.array(
        [law.rates.factor(n, d, r) for n, d, r in zip(params, tokens, rates, strict=True)]
    )
    if law.batches is not None:
        factor *= np.array([law.batches.factor(float(t.tokens), t.batch_size) for t in trials])
    loss = law(params, tokens) * factor * np.exp(noise * rng.standard_normal(len(trials)))
    return {t.id: float(v) for t, v in zip(trials, loss, strict=True)}


def tuned_losses(
    spec: api.ScalingSweepSpec, p: Plan, law: Law, noise: float, rng: np.random.Generator
) -> tuple[dict[str, float] | None, float, dict[str, TrialState]]:
    """The grid's losses with the tuning stage run through the engine (every launch finishes at
    once; None when the stage stopped), the stage's compute over the grid's, and every trial's
    state (the stage's laws: resolve them)."""
    states: dict[str, TrialState] = {}
    stage_flops = 0.0
    for _ in range(200):
        d = decide(spec, p, states)
        if d.phase == "Failed":
            return None, stage_flops / sum(t.flops for t in p.trials), states
        if not d.launches:
            break
        trials = [launch.trial for launch in d.launches]
        rates = [t.learning_rate or spec.training.learning_rate for t in trials]
        for tid, loss in draw(law, trials, rates, noise, rng).items():
            states[tid] = TrialState("Succeeded", 1, loss)
        stage_flops += sum(
            launch.trial.flops for launch in d.launches if launch.node.kind == "tuning"
        )
    grid = {t.id for t in p.trials}
    losses = {tid: s.loss for tid, s in states.items() if tid in grid and s.loss is not None}
    return losses, stage_flops / sum(t.flops for t in p.trials), states


def n_star_exponent(
    trials: Sequence[Trial], losses: dict[str, float], bootstrap: int, seed: int
) -> tuple[float, float, float] | None:
    """The N* exponent of the parabola fit of these trials' losses, with its interval (NaN where
    none is identified); None where the fit gives no N* law."""
    points = trial_points([t for t in trials if t.id in losses], losses)
    try:
        a = analyze(points, method="parabola", bootstrap=bootstrap, seed=seed)
    except ValueError:
        return None
    law_n = a.laws.get("params")
    if law_n is None:
        return None
    ci = law_n.exponent_ci
    return law_n.exponent, ci.low if ci else math.nan, ci.high if ci else math.nan


def simulate_rates(
    spec: api.ScalingSweepSpec,
    law: Law,
    noise: float,
    runs: int,
    bootstrap: int,
    ways: Sequence[RateWay] = WAYS,
    seed: int = 0,
    progress: Progress | None = None,
) -> list[RateForecast]:
    """`runs` simulated sweeps per way; the N* exponent's calibration for each."""
    if law.rates is None:
        raise ValueError("the law has no rate basin (Law.rates): every rate would be the best")
    true = truth(plan(way_spec(spec, "fixed")), law).exponents["params"]
    out = []
    for way in ways:
        s = way_spec(spec, way)
        p = plan(s)
        rng = np.random.default_rng(seed)
        value, low, high = np.full(runs, np.nan), np.full(runs, np.nan), np.full(runs, np.nan)
        fractions, failed = [], 0
        for r in range(runs):
            if way == "tuned":
                losses, fraction, _ = tuned_losses(s, p, law, noise, rng)
                fractions.append(fraction)
            elif way == "ideal":
                rates = [law.rates.optimum(t.params, t.tokens) for t in p.trials]
                losses = draw(law, p.trials, rates, noise, rng)
            else:
                rates = [learning_rate(s, t.rung) for t in p.trials]
                losses = draw(law, p.trials, rates, noise, rng)
            found = (
                None if losses is None else n_star_exponent(p.trials, losses, bootstrap, seed + r)
            )
            if found is None:
                failed += 1
                continue
            value[r], low[r], high[r] = found
            if progress is not None:
                progress(1)
        ok = np.isfinite(value)
        has = ok & np.isfinite(low)
        out.append(
            RateForecast(
                way=way,
                true=true,
                mean=float(value[ok].mean()) if ok.any() else float("nan"),
                bias=float(value[ok].mean() - true) if ok.any() else float("nan"),
                spread=float(value[ok].std(ddof=1)) if ok.sum() > 1 else float("nan"),
                coverage=float(((low <= true) & (true <= high))[has].mean()) if has.any() else None,
                identified=float(has.mean()),
                failed=failed,
                stage_fraction=float(np.mean(fractions)) if fractions else 0.0,
            )
        )
    return out
