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
from isoflop.fit.rates import RateLaw, RatePoint, fit_rate_law, rate_optimum
from isoflop.sweep.plan import (
    MAX_RATE,
    Trial,
    format_flops,
    requested_rates,
    three_digits,
)

Edge = Literal["low", "high"]


@dataclass(frozen=True)
class Group:
    """One (budget, rung) of the stage: its trials by ascending rate, the ones chosen so far, and
    once settled its optimum (or the edge its lowest loss sits at)."""

    budget: float
    rung: str
    params: int
    tokens: int
    trials: tuple[Trial, ...]
    chosen: tuple[str, ...]
    settled: bool = False
    best_rate: float | None = None  # the parabola's optimum; None: open, at an edge, too few
    edge: Edge | None = None
    problem: str | None = None  # why a settled group gives no optimum


@dataclass(frozen=True)
class Stage:
    """Where the tuning stage stands: the trials it trains, its groups, and once every group is
    settled either the law or the sentence that stops the sweep."""

    groups: tuple[Group, ...]
    chosen: frozenset[str]
    law: RateLaw | None = None
    problem: str | None = None  # the stage cannot give a law: the sweep stops with this

    @property
    def done(self) -> bool:
        return all(g.settled for g in self.groups)

    def tuned_rate(self, params: float, tokens: float, budget: float) -> float:
        """The law's rate at this N, D and budget (3 significant digits, at most the API's 1)."""
        assert self.law is not None
        return min(three_digits(self.law(params, tokens, budget)), MAX_RATE)

    def tuned(self, trial: Trial) -> Trial:
        """The trial at the law's rate for its N, D and budget."""
        rate = self.tuned_rate(trial.params, trial.tokens, trial.budget)
        return replace(trial, learning_rate=rate)


def settle(
    group: Group, lo: int, hi: int, losses: Mapping[str, float], finished: set[str]
) -> Group:
    """Choose the group's window of rates from [lo, hi], widening where its lowest loss sits at
    an edge, and settle it once every chosen trial has finished."""
    trials = group.trials
    while True:
        window = trials[lo : hi + 1]
        group = replace(group, chosen=tuple(t.id for t in window))
        if not all(t.id in finished for t in window):
            return group
        ok = [i for i in range(lo, hi + 1) if trials[i].id in losses]
        if len(ok) < 3:
            return replace(
                group,
                settled=True,
                problem=f"{len(ok)} of its {len(window)} learning rates trained to a loss",
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
        rate = rate_optimum([t.learning_rate or 0.0 for t in three], [losses[t.id] for t in three])
        return replace(group, settled=True, best_rate=rate)


def stage(
    spec: api.ScalingSweepSpec,
    trials: Sequence[Trial],
    losses: Mapping[str, float],
    finished: Iterable[str],
) -> Stage | None:
    """The stage's decisions (None without spec.tuning) from the losses of its trials that
    succeeded and the ids of every finished one (succeeded or failed for good): which to train,
    and once every group settled, the law or why there is none."""
    if spec.tuning is None or not trials:
        return None
    done = set(finished)
    asked = set(requested_rates(spec))
    by_group: dict[tuple[float, str], list[Trial]] = {}
    for t in trials:
        by_group.setdefault((t.budget, t.rung), []).append(t)
    groups = []
    for (budget, rung), mine in sorted(
        by_group.items(), key=lambda kv: (kv[0][0], kv[1][0].params)
    ):
        mine.sort(key=lambda t: t.learning_rate or 0.0)
        first = Group(budget, rung, mine[0].params, mine[0].tokens, tuple(mine), ())
        inner = [i for i, t in enumerate(mine) if t.learning_rate in asked]
        groups.append(settle(first, inner[0], inner[-1], losses, done))
    chosen = frozenset(i for g in groups for i in g.chosen)
    if not all(g.settled for g in groups):
        return Stage(tuple(groups), chosen)
    edges = [g for g in groups if g.edge is not None]
    if edges:
        return Stage(tuple(groups), chosen, problem=edge_sentence(spec, edges[0], len(edges)))
    points = [
        RatePoint(g.budget, float(g.params), float(g.tokens), g.best_rate)
        for g in groups
        if g.best_rate is not None
    ]
    if not points:
        why = "; ".join(f"{g.rung} at {format_flops(g.budget)}: {g.problem}" for g in groups[:3])
        return Stage(
            tuple(groups),
            chosen,
            problem=f"tuning: no rung found its optimum learning rate ({why})",
        )
    fit = spec.fit
    law = fit_rate_law(points, bootstrap=fit.bootstrap, seed=fit.seed)
    return Stage(tuple(groups), chosen, law=law)


def edge_sentence(spec: api.ScalingSweepSpec, group: Group, count: int) -> str:
    """Which rung, which edge, and the grid to give instead: as many rates as asked for, at the
    same ratio, centred on the edge (the stage widens that one again where it must)."""
    rates = [t.learning_rate or 0.0 for t in group.trials]
    edge_rate = rates[-1] if group.edge == "high" else rates[0]
    side = "upper" if group.edge == "high" else "lower"
    asked = requested_rates(spec)
    ratio = (asked[-1] / asked[0]) ** (1 / (len(asked) - 1))
    half = len(asked) // 2
    proposal = [three_digits(edge_rate * ratio ** (k - half)) for k in range(len(asked))]
    proposal = [r for r in proposal if r <= MAX_RATE]
    assert spec.tuning is not None
    others = f" (and {count - 1} more at an edge)" if count > 1 else ""
    advice = (
        f"give spec.tuning.learningRates [{', '.join(f'{r:g}' for r in proposal)}]"
        if len(proposal) >= 3 and edge_rate < MAX_RATE
        else "the learning rate cannot go higher; check the model and data"
    )
    return (
        f"tuning: rung {group.rung} at {format_flops(group.budget)} FLOPs has its lowest loss at "
        f"the grid's {side} edge ({edge_rate:g}) after widening {spec.tuning.widen} step(s)"
        f"{others}: {advice}"
    )
