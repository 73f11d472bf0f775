"""Sweep strategies that spend less compute than the full grid for the same laws.

- **Adaptive ladders**: the smallest `seed_budgets` budgets train every feasible rung; each later
  budget trains only the `rungs` rungs nearest (in log size) to the N* that the laws fitted on the
  budgets before it predict, and widens by one rung at a time on the side where its loss minimum
  sits at the edge of what it trained, until the minimum is bracketed or the ladder ends.
- **WSD branches** (warmup-stable-decay; Hägele et al., 2024): each rung trains once at a constant
  learning rate, and each budget's trial of that rung is a short cooldown branched from that run at
  (1 - cooldown) of its token count. A rung's cost is its stable run to the longest branch point,
  charged once, plus every branch's cooldown: tokens (1 - f) D_max + f sum_b D_b instead of
  sum_b D_b.

Pure: decisions are functions of the plan, the trials' losses so far and the budgets' order, so a
restarted driver makes the same ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from isoflop import api
from isoflop.fit import Points, analyze
from isoflop.plan import Trial
from isoflop_trainer.config import decay_start

MIN_FIT_BUDGETS = 2  # a power law of N* through budget optima needs two


@dataclass(frozen=True)
class Adaptive:
    seed_budgets: int = 2  # the smallest budgets, trained over the whole ladder
    rungs: int = 5  # rungs per later budget around the predicted optimum, before widening

    def __post_init__(self) -> None:
        if self.seed_budgets < MIN_FIT_BUDGETS:
            raise ValueError(f"seed_budgets must be at least {MIN_FIT_BUDGETS}")
        if self.rungs < 3:
            raise ValueError("rungs must be at least 3: a parabola needs three points")


@dataclass(frozen=True)
class Wsd:
    cooldown: float = 0.2  # a branch's cooldown as a fraction of its tokens

    def __post_init__(self) -> None:
        if not 0 < self.cooldown <= 1:
            raise ValueError("cooldown must be in (0, 1]")


def by_budget(trials: Iterable[Trial]) -> dict[float, list[Trial]]:
    """Each budget's trials, smallest model first; budgets ascending."""
    out: dict[float, list[Trial]] = {}
    for t in sorted(trials, key=lambda t: (t.budget, t.params, t.id)):
        out.setdefault(t.budget, []).append(t)
    return out


def trial_points(trials: Iterable[Trial], losses: Mapping[str, float]) -> Points:
    """The fit's rows for these trials and their losses."""
    return Points.from_rows(
        {
            "budget": t.budget,
            "params": float(t.params),
            "tokens": float(t.tokens),
            "loss": losses[t.id],
        }
        for t in trials
    )


def predicted_optimum(trials: Sequence[Trial], losses: Mapping[str, float], budget: float) -> float:
    """N* at `budget` from the parabola laws fitted to these finished trials (no bootstrap)."""
    law = analyze(trial_points(trials, losses), method="parabola", bootstrap=0).laws["params"]
    return float(law.coefficient * budget**law.exponent)


def around(ladder: Sequence[Trial], target: float, rungs: int) -> list[Trial]:
    """The `rungs` consecutive trials of a budget's ladder (ascending size) centred nearest to
    `target` parameters in log size; at an end of the ladder, the window stops at it."""
    if len(ladder) <= rungs:
        return list(ladder)
    nearest = min(range(len(ladder)), key=lambda i: abs(math.log(ladder[i].params / target)))
    start = min(max(nearest - rungs // 2, 0), len(ladder) - rungs)
    return list(ladder[start : start + rungs])


def widen(
    ladder: Sequence[Trial], chosen: Sequence[Trial], losses: Mapping[str, float]
) -> Trial | None:
    """The next rung to add when the lowest loss of the chosen (all finished) sits at an edge of
    them with a rung beyond it; None when the minimum is bracketed or the ladder ends."""
    order = sorted(chosen, key=lambda t: t.params)
    best = min(order, key=lambda t: (losses[t.id], t.params))
    index = {t.id: i for i, t in enumerate(ladder)}
    if best is order[0] and index[best.id] > 0:
        return ladder[index[best.id] - 1]
    if best is order[-1] and index[best.id] < len(ladder) - 1:
        return ladder[index[best.id] + 1]
    return None


def run_adaptive(
    trials: Iterable[Trial],
    adaptive: Adaptive,
    train: Callable[[Sequence[Trial]], Mapping[str, float]],
) -> dict[str, float]:
    """Drive an adaptive sweep to its end with `train` (trials -> their losses): seeds, then
    each later budget around its prediction, widened until bracketed. Returns every loss."""
    losses: dict[str, float] = {}
    done: list[Trial] = []
    for i, (budget, ladder) in enumerate(by_budget(trials).items()):
        if i < adaptive.seed_budgets:
            chosen = list(ladder)
        else:
            chosen = around(ladder, predicted_optimum(done, losses, budget), adaptive.rungs)
        losses.update(train(chosen))
        while (extra := widen(ladder, chosen, losses)) is not None:
            chosen.append(extra)
            losses.update(train([extra]))
        done += chosen
    return losses


def wsd_flops(trials: Iterable[Trial], wsd: Wsd) -> float:
    """The compute of these trials as WSD branches: per rung, the stable run to the longest
    branch's (1 - cooldown) point once, plus each branch's cooldown."""
    rungs: dict[str, list[Trial]] = {}
    for t in trials:
        rungs.setdefault(t.rung, []).append(t)
    total = 0.0
    for branches in rungs.values():
        per_token = branches[0].flops_exact / branches[0].tokens  # one rung: one cost per token
        longest = max(t.tokens for t in branches)
        tokens = (1 - wsd.cooldown) * longest + wsd.cooldown * sum(t.tokens for t in branches)
        total += per_token * tokens
    return total


@dataclass(frozen=True)
class StableRun:
    """One rung's constant-rate run: to its last branch point, keeping a checkpoint at each."""

    rung: str
    steps: int
    branch_points: tuple[int, ...]
    warmup_steps: int  # shared by every branch of the rung, so their prefixes are this run's


@dataclass(frozen=True)
class Branch:
    """A trial trained as a cooldown from its rung's stable run at `branch_step`."""

    trial: Trial
    branch_step: int


def branch_plan(
    trials: Iterable[Trial], wsd: Wsd, warmup_fraction: float
) -> tuple[dict[str, StableRun], list[Branch]]:
    """The stable runs and branches that train these trials as WSD cooldowns. A rung's warmup is
    its shortest trial's (warmup_fraction of its steps); a trial's branch point is where its own
    WSD schedule's cooldown starts. ValueError when a rung's trials differ in batch size (their
    steps would not be one run's) or a warmup would reach into a cooldown."""
    rungs: dict[str, list[Trial]] = {}
    for t in sorted(trials, key=lambda t: (t.rung, t.steps, t.id)):
        rungs.setdefault(t.rung, []).append(t)
    stable, branches = {}, []
    for rung, mine in rungs.items():
        if len({t.batch_size for t in mine}) > 1:
            raise ValueError(f"rung {rung}: branches need one batch size for all its budgets")
        warmup = round(warmup_fraction * mine[0].steps)
        points = {t.id: decay_start(t.steps, wsd.cooldown) for t in mine}
        if min(points.values()) <= warmup:
            raise ValueError(f"rung {rung}: its warmup ({warmup} steps) reaches a cooldown")
        stable[rung] = StableRun(
            rung, max(points.values()), tuple(sorted(set(points.values()))), warmup
        )
        branches += [Branch(t, points[t.id]) for t in mine]
    return stable, branches


def densified(spec: api.ScalingSweepSpec, factor: int) -> api.ScalingSweepSpec:
    """`factor` x as many budgets, log-spaced over the same range (3 significant digits): with
    WSD branches a budget below the largest costs only its cooldowns."""
    if factor == 1:
        return spec
    low, high = min(spec.budgets), max(spec.budgets)
    n = factor * len(spec.budgets)
    budgets = sorted({float(f"{x:.3g}") for x in np.logspace(math.log10(low), math.log10(high), n)})
    return spec.model_copy(update={"budgets": budgets})


@dataclass(frozen=True)
class Strategy:
    """A way to run a grid: an adaptive ladder, WSD branches, denser budgets, or none of them."""

    name: str
    adaptive: Adaptive | None = None
    wsd: Wsd | None = None
    budget_factor: int = 1


STRATEGIES = (
    Strategy("full grid"),
    Strategy("wsd branches (cooldown 0.2)", wsd=Wsd(0.2)),
    Strategy("wsd branches, 2x budgets", wsd=Wsd(0.2), budget_factor=2),
    Strategy("adaptive ladder (5 rungs)", adaptive=Adaptive(rungs=5)),
    Strategy("adaptive + wsd branches", adaptive=Adaptive(rungs=5), wsd=Wsd(0.2)),
)
