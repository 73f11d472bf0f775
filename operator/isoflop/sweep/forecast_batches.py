"""Forecast what the global batch does to a sweep's laws: simulated sweeps on a known law whose
loss depends on the learning rate and the batch (Law.rates, Law.batches), trained at one rate and
batch for all, with the tuning stage tuning the rate alone, or the rate and then the batch
(spec.tuning.globalBatchSizes), driven through the engine as `isoflop run` drives it.

Per way, the N* exponent's bias against the truth, its scatter and its 95% interval's coverage,
the stage's share of the grid's compute, and for the batch stage the batch law's D exponent
against the basin's own (bias and coverage). The baseline ("ideal") trains every trial at its own
optimum rate and batch (the batch rounded as the stage rounds it).
`benchmarks/bench_calibration.py --batches` runs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from isoflop import api
from isoflop.sweep.engine import resolve
from isoflop.sweep.forecast import BatchBasin, Law, Progress, truth
from isoflop.sweep.forecast_rates import draw, n_star_exponent, tuned_losses
from isoflop.sweep.plan import Trial, batch_unit, plan, resized

BatchWay = Literal["ideal", "fixed", "rates", "both"]
BATCH_WAYS: tuple[BatchWay, ...] = ("ideal", "fixed", "rates", "both")
STEP_LAW_BATCH_EXPONENT = 0.571  # B* = 0.58 D^0.571 (Li et al. 2025)


@dataclass(frozen=True)
class BatchForecast:
    """One way of setting rate and batch over the simulated sweeps."""

    way: BatchWay
    true: float  # the N* exponent of the optimal surface
    bias: float
    spread: float
    coverage: float | None
    failed: int  # sweeps with no N* law, or whose stage stopped
    stage_fraction: float
    batch_true: float | None = None  # the basin's D exponent ("both" only)
    batch_bias: float | None = None
    batch_coverage: float | None = None  # share of identified intervals that held it


def centred_batches(
    spec: api.ScalingSweepSpec, beta: float = STEP_LAW_BATCH_EXPONENT, depth: float = 0.1
) -> BatchBasin:
    """A batch basin with this exponent whose optimum at the grid's middle trial is the spec's
    own batch (as centred_basin does for the rate)."""
    trials = sorted(plan(spec).trials, key=lambda t: (t.budget, t.params))
    budgets = sorted({t.budget for t in trials})
    mine = [t for t in trials if t.budget == budgets[len(budgets) // 2]]
    mid = mine[len(mine) // 2]
    return BatchBasin(spec.training.global_batch_size / mid.tokens**beta, beta, depth)


def batch_grid(spec: api.ScalingSweepSpec) -> list[int]:
    """training.globalBatchSize x 2^(-2..2), as multiples of the micro-batch."""
    unit, batch = batch_unit(spec), spec.training.global_batch_size
    return sorted({max(unit, unit * round(batch * 2.0**k / unit)) for k in range(-2, 3)})


def way_spec(spec: api.ScalingSweepSpec, way: BatchWay) -> api.ScalingSweepSpec:
    tuning = None
    if way == "rates":
        tuning = api.TuningSpec()
    elif way == "both":
        tuning = api.TuningSpec(global_batch_sizes=batch_grid(spec))
    return spec.model_copy(update={"tuning": tuning, "parallelism": 10000})


def at_optimum(spec: api.ScalingSweepSpec, t: Trial, law: Law) -> Trial:
    """A grid trial at its own optimum batch (rounded, at most what leaves minSteps steps) and
    rate: what the stage's laws aim at."""
    assert law.batches is not None
    assert law.rates is not None
    unit = batch_unit(spec)
    most = max(unit, t.samples // spec.training.min_steps // unit * unit)
    batch = min(max(unit, unit * round(law.batches.optimum(t.tokens) / unit)), most)
    t = resized(t, batch)
    return replace(t, learning_rate=law.rates.optimum(t.params, t.tokens))


def simulate_batches(
    spec: api.ScalingSweepSpec,
    law: Law,
    noise: float,
    runs: int,
    bootstrap: int,
    ways: Sequence[BatchWay] = BATCH_WAYS,
    seed: int = 0,
    progress: Progress | None = None,
) -> list[BatchForecast]:
    """`runs` simulated sweeps per way: the N* exponent's calibration, and the batch law's."""
    if law.rates is None or law.batches is None:
        raise ValueError("the law needs a rate basin and a batch basin (Law.rates, Law.batches)")
    true = truth(plan(way_spec(spec, "fixed")), law).exponents["params"]
    out = []
    for way in ways:
        s = way_spec(spec, way)
        p = plan(s)
        rng = np.random.default_rng(seed)
        value = np.full(runs, np.nan)
        low, high = np.full(runs, np.nan), np.full(runs, np.nan)
        batch_value, batch_hit = np.full(runs, np.nan), np.full(runs, np.nan)
        fractions, failed = [], 0
        for r in range(runs):
            trained: Sequence[Trial] = p.trials
            if way in ("rates", "both"):
                losses, fraction, states = tuned_losses(s, p, law, noise, rng)
                fractions.append(fraction)
                if losses is not None:
                    sweep = resolve(s, p, states)
                    stage = sweep.tuning
                    nodes = {n.id: n.trial for n in sweep.graph.nodes}
                    trained = [nodes.get(t.id, t) for t in p.trials]
                    if way == "both" and stage is not None and stage.batch_law is not None:
                        b = stage.batch_law
                        batch_value[r] = b.tokens_exponent or 0.0
                        ci = b.intervals.get("tokens")
                        if ci is not None:
                            batch_hit[r] = ci.low <= law.batches.beta <= ci.high
            elif way == "ideal":
                trained = [at_optimum(s, t, law) for t in p.trials]
                rates = [t.learning_rate or 0.0 for t in trained]
                losses = draw(law, trained, rates, noise, rng)
            else:
                losses = draw(law, p.trials, [s.training.learning_rate] * len(p.trials), noise, rng)
            found = (
                None if losses is None else n_star_exponent(trained, losses, bootstrap, seed + r)
            )
            if found is None:
                failed += 1
                continue
            value[r], low[r], high[r] = found
            if progress is not None:
                progress(1)
        ok, has = np.isfinite(value), np.isfinite(low)
        hits = (low[has] <= true) & (true <= high[has])
        batch_ok, batch_has = np.isfinite(batch_value), np.isfinite(batch_hit)
        out.append(
            BatchForecast(
                way=way,
                true=true,
                bias=float(np.mean(value[ok]) - true) if ok.any() else float("nan"),
                spread=float(np.std(value[ok])) if ok.any() else float("nan"),
                coverage=float(np.mean(hits)) if has.any() else None,
                failed=failed,
                stage_fraction=float(np.mean(fractions)) if fractions else 0.0,
                batch_true=law.batches.beta if way == "both" else None,
                batch_bias=(
                    float(np.mean(batch_value[batch_ok]) - law.batches.beta)
                    if batch_ok.any()
                    else None
                ),
                batch_coverage=float(np.mean(batch_hit[batch_has])) if batch_has.any() else None,
            )
        )
    return out


def format_batches(
    rows: Sequence[BatchForecast], runs: int, noise: float, basin: BatchBasin
) -> str:
    """The ways side by side: the N* exponent's bias, and the batch law's."""
    names = {
        "ideal": "every trial at its optimum",
        "fixed": "one rate and batch",
        "rates": "the stage on rates alone",
        "both": "the stage on rates, then batches",
    }
    lines = [
        f"Batches, {runs} simulated sweeps each at {noise:.2%} noise, on losses with a basin "
        f"around B* = {basin.coefficient:.3g} D^{basin.beta:g} (depth {basin.depth:g} per squared "
        f"decade) and Step Law's rate basin; N* exponent, truth {rows[0].true:.3f}:",
        f"  {'way':<34} {'bias':>8} {'scatter':>8} {'coverage':>8} {'failed':>6} {'extra':>7}",
    ]
    for r in rows:
        cov = "n/a" if r.coverage is None else f"{r.coverage:.0%}"
        extra = f"{r.stage_fraction:.1%}" if r.way in ("rates", "both") else "-"
        lines.append(
            f"  {names[r.way]:<34} {r.bias:>+8.4f} {r.spread:>8.4f} {cov:>8} {r.failed:>6} "
            f"{extra:>7}"
        )
    both = next((r for r in rows if r.way == "both"), None)
    if both is not None and both.batch_bias is not None:
        cov = "n/a" if both.batch_coverage is None else f"{both.batch_coverage:.0%}"
        lines.append(
            f"  the batch law's D exponent: bias {both.batch_bias:+.4f} against {basin.beta:g}, "
            f"its interval held it in {cov}"
        )
    return "\n".join(lines)
