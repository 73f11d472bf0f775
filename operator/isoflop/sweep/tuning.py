"""The tuning stage (spec.tuning): the learning rate as a fitted law of scale, before the grid.

A fixed learning rate across a ladder compares a small model at its rate with a large one at the
same rate, too high for one or too low for the other, and moves the compute-optimal exponent
(Porian et al., NeurIPS 2024). The stage trains a log grid of rates at a few small budgets and
rungs; each (budget, rung) group starts with the requested rates and widens one step at a time
(up to `widen` steps, like the adaptive ladder widens a budget) where its lowest loss sits at an
edge. Once every group is settled, the optimum of each is the minimum of a parabola in log rate
(isoflop.fit.rates), and the law through them sets the rate of every grid trial and
confirmation for its own N and D. A group still at an edge after widening stops the stage with
a sentence proposing the wider grid: a law through an edge would be a guess.

Where spec.tuning.globalBatchSizes asks for batches, each group, once its rate is settled, trains
those batch sizes at its optimum rate (one step of coordinate descent: Step Law finds the basin
broad), settles them the same way, and the law B*(D) through their optima sets every grid
trial's batch (rounded to the micro-batch, at most what leaves minSteps steps) before its rate.

    stage           which of the stage's trials (isoflop.sweep.plan.tuning_trials: the whole
                    grid, widened steps included) to train, and the law once they are done
    tuned           a trial at the law's rate

Pure: decisions are functions of the spec and the trials' losses, so a restarted driver makes the
same ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from isoflop import api
from isoflop.fit.rates import RateLaw, RatePoint, fit_batch_law, fit_rate_law, rate_optimum
from isoflop.sweep.plan import (
    MAX_RATE,
    Trial,
    batch_unit,
    beyond_batches,
    format_flops,
    requested_batches,
    requested_rates,
    resized,
    three_digits,
)

Edge = Literal["low", "high"]


@dataclass(frozen=True)
class Group:
    """One (budget, rung) of the stage: its trials by ascending rate (or batch size), the ones
    chosen so far, and once settled its optimum (or the edge its lowest loss sits at)."""

    budget: float
    rung: str
    params: int
    tokens: int
    trials: tuple[Trial, ...]
    chosen: tuple[str, ...]
    settled: bool = False
    best: float | None = None  # the parabola's optimum; None: open, at an edge, too few
    edge: Edge | None = None
    problem: str | None = None  # why a settled group gives no optimum
    tunes: Literal["rate", "batch"] = "rate"

    def value(self, trial: Trial) -> float:
        """What the group varies, of one of its trials."""
        return float(trial.batch_size if self.tunes == "batch" else trial.learning_rate or 0.0)


@dataclass(frozen=True)
class Stage:
    """Where the tuning stage stands: the trials it trains, its groups, and once every group is
    settled either the law or the sentence that stops the sweep."""

    groups: tuple[Group, ...]
    chosen: frozenset[str]
    law: RateLaw | None = None
    problem: str | None = None  # the stage cannot give a law: the sweep stops with this
    batch_groups: tuple[Group, ...] = ()  # spec.tuning.globalBatchSizes: one per group
    batch_law: RateLaw | None = None
    unit: int = 1  # every batch is a multiple of it (training.microBatchSize)
    min_steps: int = 1

    @property
    def done(self) -> bool:
        return all(g.settled for g in (*self.groups, *self.batch_groups))

    @property
    def ready(self) -> bool:
        """Its laws stand: the grid may train."""
        return self.law is not None and (not self.batch_groups or self.batch_law is not None)

    def tuned_rate(self, params: float, tokens: float, budget: float) -> float:
        """The law's rate at this N, D and budget (3 significant digits, at most the API's 1)."""
        assert self.law is not None
        return min(three_digits(self.law(params, tokens, budget)), MAX_RATE)

    def tuned_batch(self, tokens: float, samples: int) -> int | None:
        """The batch law's batch for D tokens, as a multiple of the unit, at most what leaves
        minSteps steps of these samples (at least one unit); None without a batch law."""
        if self.batch_law is None:
            return None
        most = max(self.unit, samples // self.min_steps // self.unit * self.unit)
        wanted = self.unit * round(self.batch_law(1.0, tokens, 1.0) / self.unit)
        return min(max(self.unit, wanted), most)

    def tuned(self, trial: Trial) -> Trial:
        """The trial at the laws' batch for its D (where batches are tuned), then at the rate
        law's for its N, D and budget."""
        batch = self.tuned_batch(trial.tokens, trial.samples)
        if batch is not None and batch != trial.batch_size:
            trial = resized(trial, batch)
        rate = self.tuned_rate(trial.params, trial.tokens, trial.budget)
        return replace(trial, learning_rate=rate)

    def prepared(self, trial: Trial) -> Trial:
        """A stage's trial as it trains: a batch trial at its group's optimum rate once that is
        known (3 significant digits)."""
        if trial.tunes != "batch":
            return trial
        for g in self.groups:
            if (g.budget, g.rung) == (trial.budget, trial.rung) and g.best is not None:
                return replace(trial, learning_rate=min(three_digits(g.best), MAX_RATE))
        return trial


def settle(
    group: Group, lo: int, hi: int, losses: Mapping[str, float], finished: set[str]
) -> Group:
    """Choose the group's window of rates from [lo, hi], widening where its lowest loss sits at
    an edge, and settle it once every chosen trial has finished."""
    trials = group.trials
    value = group.value
    while True:
        window = trials[lo : hi + 1]
        group = replace(group, chosen=tuple(t.id for t in window))
        if not all(t.id in finished for t in window):
            return group
        ok = [i for i in range(lo, hi + 1) if trials[i].id in losses]
        if len(ok) < 3:
            what = "batch sizes" if group.tunes == "batch" else "learning rates"
            return replace(
                group,
                settled=True,
                problem=f"{len(ok)} of its {len(window)} {what} trained to a loss",
            )
        best = min(ok, key=lambda i: (losses[trials[i].id], i))
        if best == ok[0]:
            if lo > 0:
                lo -= 1
                continue
            return replace(group, settled=True, edge="low")
        if best == ok[-1]:
            if hi < len(trials) - 1:
                hi += 1
                continue
            return replace(group, settled=True, edge="high")
        k = ok.index(best)
        three = [trials[i] for i in ok[k - 1 : k + 2]]
        best_value = rate_optimum([value(t) for t in three], [losses[t.id] for t in three])
        return replace(group, settled=True, best=best_value)


def stage(
    spec: api.ScalingSweepSpec,
    trials: Sequence[Trial],
    losses: Mapping[str, float],
    finished: Iterable[str],
) -> Stage | None:
    """The stage's decisions (None without spec.tuning) from the losses of its trials that
    succeeded and the ids of every finished one (succeeded or failed for good): which to train,
    and once every group settled, the laws or why there are none."""
    if spec.tuning is None or not trials:
        return None
    done = set(finished)
    asked = set(requested_rates(spec))
    by_group: dict[tuple[float, str], list[Trial]] = {}
    batches: dict[tuple[float, str], list[Trial]] = {}
    for t in trials:
        (batches if t.tunes == "batch" else by_group).setdefault((t.budget, t.rung), []).append(t)
    groups = []
    for (budget, rung), mine in sorted(
        by_group.items(), key=lambda kv: (kv[0][0], kv[1][0].params)
    ):
        mine.sort(key=lambda t: t.learning_rate or 0.0)
        first = Group(budget, rung, mine[0].params, mine[0].tokens, tuple(mine), ())
        inner = [i for i, t in enumerate(mine) if t.learning_rate in asked]
        groups.append(settle(first, inner[0], inner[-1], losses, done))
    batch_groups = tuple(batch_group(spec, g, batches.get((g.budget, g.rung), []), losses, done)
                         for g in groups) if spec.tuning.global_batch_sizes else ()  # fmt: skip
    every = (*groups, *batch_groups)
    chosen = frozenset(i for g in every for i in g.chosen)
    unit, min_steps = batch_unit(spec), spec.training.min_steps
    base = Stage(tuple(groups), chosen, batch_groups=batch_groups, unit=unit, min_steps=min_steps)
    if not all(g.settled for g in every):
        return base
    edges = [g for g in every if g.edge is not None]
    if edges:
        return replace(base, problem=edge_sentence(spec, edges[0], len(edges)))
    points = optima(groups)
    if not points:
        return replace(base, problem=no_optimum(groups, "learning rate"))
    fit = spec.fit
    law = fit_rate_law(points, bootstrap=fit.bootstrap, seed=fit.seed)
    if not batch_groups:
        return replace(base, law=law)
    batch_points = optima(batch_groups)
    if not batch_points:
        return replace(base, law=law, problem=no_optimum(batch_groups, "batch size"))
    batch_law = fit_batch_law(batch_points, bootstrap=fit.bootstrap, seed=fit.seed)
    return replace(base, law=law, batch_law=batch_law)


def batch_group(
    spec: api.ScalingSweepSpec,
    rates: Group,
    mine: list[Trial],
    losses: Mapping[str, float],
    done: set[str],
) -> Group:
    """The batch sizes of one (budget, rung): chosen once its rate is settled, at that optimum
    (Stage.prepared); settled without an optimum where the rate has none or no batch of the
    grid leaves minSteps steps."""
    mine = sorted(mine, key=lambda t: t.batch_size)
    empty = Group(rates.budget, rates.rung, rates.params, rates.tokens, tuple(mine), (),
                  tunes="batch")  # fmt: skip
    if not rates.settled:
        return empty
    if rates.best is None:
        return replace(empty, settled=True, problem="its learning rate has no optimum")
    asked = set(requested_batches(spec))
    inner = [i for i, t in enumerate(mine) if t.batch_size in asked]
    if len(mine) < 3:
        return replace(
            empty,
            settled=True,
            problem=f"{len(mine)} of the batch sizes leave minSteps steps at this budget",
        )
    # where the largest batches leave too few steps, the window starts lower (widened ones)
    hi = inner[-1] if inner else len(mine) - 1
    lo = min(inner[0] if inner else hi, hi - 2)
    return settle(empty, max(lo, 0), hi, losses, done)


def optima(groups: Sequence[Group]) -> list[RatePoint]:
    return [
        RatePoint(g.budget, float(g.params), float(g.tokens), g.best)
        for g in groups
        if g.best is not None
    ]


def no_optimum(groups: Sequence[Group], what: str) -> str:
    why = "; ".join(f"{g.rung} at {format_flops(g.budget)}: {g.problem}" for g in groups[:3])
    return f"tuning: no rung found its optimum {what} ({why})"


def edge_sentence(spec: api.ScalingSweepSpec, group: Group, count: int) -> str:
    """Which rung, which edge, and the grid to give instead: as many values as asked for, at the
    same ratio, centred on the edge (the stage widens that one again where it must)."""
    values = [group.value(t) for t in group.trials]
    edge_value = values[-1] if group.edge == "high" else values[0]
    side = "upper" if group.edge == "high" else "lower"
    assert spec.tuning is not None
    others = f" (and {count - 1} more at an edge)" if count > 1 else ""
    if group.tunes == "batch":
        wanted = requested_batches(spec)
        unit = batch_unit(spec)
        ratio = (wanted[-1] / wanted[0]) ** (1 / (len(wanted) - 1))
        half = len(wanted) // 2
        grid = sorted({max(unit, unit * round(edge_value * ratio ** (k - half) / unit))
                       for k in range(len(wanted))})  # fmt: skip
        advice = f"give spec.tuning.globalBatchSizes [{', '.join(str(b) for b in grid)}]"
        widest = beyond_batches(wanted, spec.tuning.widen, "high", unit) or wanted
        if group.edge == "low" and edge_value <= unit:
            advice = "the batch cannot go lower; check the model and data"
        elif group.edge == "high" and edge_value < widest[-1]:
            advice = (
                f"a larger batch leaves fewer than minSteps {spec.training.min_steps} steps at "
                "this budget: give spec.tuning.budgets larger ones"
            )
    else:
        asked = requested_rates(spec)
        ratio = (asked[-1] / asked[0]) ** (1 / (len(asked) - 1))
        half = len(asked) // 2
        proposal = [three_digits(edge_value * ratio ** (k - half)) for k in range(len(asked))]
        proposal = [r for r in proposal if r <= MAX_RATE]
        advice = (
            f"give spec.tuning.learningRates [{', '.join(f'{r:g}' for r in proposal)}]"
            if len(proposal) >= 3 and edge_value < MAX_RATE
            else "the learning rate cannot go higher; check the model and data"
        )
    grid_name = "batch grid" if group.tunes == "batch" else "grid"
    return (
        f"tuning: rung {group.rung} at {format_flops(group.budget)} FLOPs has its lowest loss at "
        f"the {grid_name}'s {side} edge ({edge_value:g}) after widening {spec.tuning.widen} step(s)"
        f"{others}: {advice}"
    )
