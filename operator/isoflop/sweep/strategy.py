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

import contextlib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from isoflop import api
from isoflop.fit import Points, analyze
from isoflop.sweep.plan import Trial, budget_tag
from isoflop_trainer.config import decay_start

MIN_FIT_BUDGETS = 2  # a power law of N* through budget optima needs two


@dataclass(frozen=True)
class Adaptive:
    seed_budgets: int = 2  # the smallest budgets, trained over the whole ladder
    rungs: int = 5  # rungs per later budget around the predicted optimum, before widening
    # ladder steps between chosen rungs: a wider span pins the vertex of a flat curve far better
    # than adjacent rungs (bench_strategies: 5 rungs 3 steps apart need 0.28x the compute of 5
    # adjacent ones for the same N* exponent precision on the paper grid)
    stride: int = 3

    def __post_init__(self) -> None:
        if self.seed_budgets < MIN_FIT_BUDGETS:
            raise ValueError(f"seed_budgets must be at least {MIN_FIT_BUDGETS}")
        if self.rungs < 3:
            raise ValueError("rungs must be at least 3: a parabola needs three points")
        if self.stride < 1:
            raise ValueError("stride must be at least 1")


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
    """N* at `budget` from the parabola laws fitted to these finished trials (no bootstrap);
    ValueError when they give no N* law."""
    laws = analyze(trial_points(trials, losses), method="parabola", bootstrap=0).laws
    if "params" not in laws:  # no budget's loss curves upward: no optimum to follow
        raise ValueError("no N* law through these budgets")
    law = laws["params"]
    return float(law.coefficient * budget**law.exponent)


def around(ladder: Sequence[Trial], target: float, rungs: int, stride: int = 1) -> list[Trial]:
    """`rungs` trials of a budget's ladder (ascending size), `stride` ladder steps apart (less
    where the ladder is too short for that span), centred nearest to `target` parameters in log
    size; at an end of the ladder, the window stops at it."""
    if len(ladder) <= rungs:
        return list(ladder)
    step = max(1, min(stride, (len(ladder) - 1) // (rungs - 1)))
    span = (rungs - 1) * step
    nearest = min(range(len(ladder)), key=lambda i: abs(math.log(ladder[i].params / target)))
    start = min(max(nearest - span // 2, 0), len(ladder) - 1 - span)
    return [ladder[start + k * step] for k in range(rungs)]


def widen(
    ladder: Sequence[Trial], chosen: Sequence[Trial], losses: Mapping[str, float], stride: int = 1
) -> Trial | None:
    """The next rung to add when the lowest loss of the chosen (all finished) sits at an edge of
    them with a rung beyond it: `stride` ladder steps further out, or the ladder's end if nearer.
    None when the minimum is bracketed or the ladder ends."""
    order = sorted(chosen, key=lambda t: t.params)
    best = min(order, key=lambda t: (losses[t.id], t.params))
    index = {t.id: i for i, t in enumerate(ladder)}
    if best is order[0] and index[best.id] > 0:
        return ladder[max(index[best.id] - stride, 0)]
    if best is order[-1] and index[best.id] < len(ladder) - 1:
        return ladder[min(index[best.id] + stride, len(ladder) - 1)]
    return None


@dataclass(frozen=True)
class Choice:
    """The adaptive ladder's decisions so far, from the losses of finished trials alone."""

    chosen: frozenset[str]  # trials to train: the whole seed budgets, the windows after them
    skipped: frozenset[str]  # trials of settled budgets that the ladder leaves out
    settled: tuple[float, ...]  # budgets whose every chosen trial finished, minimum bracketed


def adapt(
    trials: Iterable[Trial],
    adaptive: Adaptive,
    losses: Mapping[str, float],
    finished: Iterable[str],
) -> Choice:
    """Which trials the adaptive ladder trains, given the losses of the trials that succeeded and
    the ids of every finished one (succeeded or failed for good). The seed budgets train every
    rung at once; the later ones are decided in order: one is open until its chosen trials finish
    and its minimum is bracketed, and the budgets after an open one are undecided (neither chosen
    nor skipped). Rungs are chosen with all their
    replicates, and a rung's loss is its replicates' mean. Deterministic: a restarted driver that
    knows the same losses makes the same choice."""
    done = set(finished)
    chosen: set[str] = set()
    skipped: set[str] = set()
    settled: list[float] = []
    fitted: list[Trial] = []  # the trials with losses of settled budgets: the laws so far
    for i, (budget, mine) in enumerate(by_budget(trials).items()):
        rungs: dict[str, list[Trial]] = {}
        for t in mine:
            rungs.setdefault(t.rung, []).append(t)
        ladder = [group[0] for group in rungs.values()]  # ascending size, one per rung
        window = list(ladder)
        if i < adaptive.seed_budgets:  # the seeds do not wait for each other
            chosen |= {t.id for t in mine}
            if {t.id for t in mine} <= done:
                settled.append(budget)
                fitted += [t for t in mine if t.id in losses]
            continue
        if len(settled) < i:  # a budget before this one is still open
            break
        with contextlib.suppress(ValueError, FloatingPointError):  # no law yet: every rung
            window = around(
                ladder, predicted_optimum(fitted, losses, budget), adaptive.rungs, adaptive.stride
            )
        while True:
            ids = {t.id for rep in window for t in rungs[rep.rung]}
            chosen |= ids
            if not ids <= done:
                return Choice(frozenset(chosen), frozenset(skipped), tuple(settled))
            rung_loss = {
                rep.id: float(np.mean(got))
                for rep in window
                if (got := [losses[t.id] for t in rungs[rep.rung] if t.id in losses])
            }
            measured = [rep for rep in window if rep.id in rung_loss]
            extra = widen(ladder, measured, rung_loss, adaptive.stride) if measured else None
            if extra is None or extra in window:  # bracketed, or beyond a rung that failed
                break
            window.append(extra)
        settled.append(budget)
        skipped |= {t.id for t in mine} - chosen
        fitted += [t for t in mine if t.id in chosen and t.id in losses]
    return Choice(frozenset(chosen), frozenset(skipped), tuple(settled))


def run_adaptive(
    trials: Iterable[Trial],
    adaptive: Adaptive,
    train: Callable[[Sequence[Trial]], Mapping[str, float]],
) -> dict[str, float]:
    """Drive an adaptive sweep to its end with `train` (trials -> their losses; a trial missing
    from its answer failed): the engine's decisions, made as each batch of trials finishes.
    Returns every loss."""
    trials = list(trials)
    losses: dict[str, float] = {}
    finished: set[str] = set()
    while True:
        todo = adapt(trials, adaptive, losses, finished).chosen - finished
        if not todo:
            return losses
        losses.update(train([t for t in trials if t.id in todo]))
        finished |= todo


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


def run_name(trial: Trial) -> str:
    """The stable run a trial branches from: one per rung and seed (replicates differ in seed)."""
    return trial.rung + (f"-r{trial.replicate}" if trial.replicate else "")


@dataclass(frozen=True)
class StableRun:
    """One rung's constant-rate run: to its last branch point, keeping a checkpoint at each."""

    rung: str  # its run_name: the rung, and the replicate after the first
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
    """The stable runs and branches that train these trials as WSD cooldowns, one stable run per
    rung and replicate (`run_name`). A run's warmup is its shortest trial's (warmup_fraction of
    its steps); a trial's branch point is where its own WSD schedule's cooldown starts.
    ValueError when a rung's trials differ in batch size (their steps would not be one run's) or a
    warmup would reach into a cooldown."""
    rungs: dict[str, list[Trial]] = {}
    for t in sorted(trials, key=lambda t: (t.rung, t.replicate, t.steps, t.id)):
        rungs.setdefault(run_name(t), []).append(t)
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


NodeKind = Literal["trial", "stable", "branch", "tuning"]


@dataclass(frozen=True)
class Node:
    """One training run the engine launches: a grid trial trained from scratch, a WSD branch (a
    grid trial trained as a cooldown from its stable run), a segment of a stable run, or a trial
    of the tuning stage (isoflop.sweep.tuning), trained from scratch before the grid."""

    trial: Trial  # a stable segment's stand-in: its run from step 0 to `trial.steps`
    kind: NodeKind = "trial"
    after: str | None = None  # the node that must have succeeded before this one starts
    run: str | None = None  # the stable run it continues or branches from (its checkpoints)
    warmup_steps: int | None = None  # the run's shared warmup (None: the trial's own)
    branch_step: int = 0  # a branch: the step it leaves its stable run at
    start_step: int = 0  # a stable segment: the step it continues its run from
    own_flops: int = 0  # the compute it adds, under the sweep's accounting

    @property
    def id(self) -> str:
        return self.trial.id


@dataclass(frozen=True)
class Graph:
    """Everything a strategy trains: the tuning stage's trials first, the grid's trials as nodes,
    and the stable segments their branches wait for. A stable run is trained in segments, each
    to the next branch point and each a launch of its own that resumes the run's checkpoint: a
    segment's success is what tells a branch its checkpoint exists, to the local runner and the
    operator alike."""

    nodes: tuple[Node, ...]
    full_grid_flops: int  # the grid's trials from scratch
    by_id: Mapping[str, Node] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_id", {n.id: n for n in self.nodes})

    def planned(self, skipped: Iterable[str] = ()) -> list[Node]:
        """The grid's nodes trained when these grid trials are skipped: the rest of the grid, and
        each stable run's segments up to the last branch point a trial of it still has (the
        tuning stage's are its own: isoflop.sweep.tuning.Stage.chosen)."""
        left_out = set(skipped)
        reach: dict[str | None, int] = {}
        for n in self.nodes:
            if n.kind == "branch" and n.id not in left_out:
                reach[n.run] = max(reach.get(n.run, 0), n.branch_step)
        return [
            n
            for n in self.nodes
            if n.kind != "tuning"
            and (
                n.trial.steps <= reach.get(n.run, 0) if n.kind == "stable" else n.id not in left_out
            )
        ]


def stable_id(run: str, budget: float) -> str:
    """A stable segment's id: the run up to the branch point of this budget's trial."""
    return f"{budget_tag(budget)}-{run}-stable"


def graph(
    spec: api.ScalingSweepSpec, trials: Sequence[Trial], tuning: Sequence[Trial] = ()
) -> Graph:
    """The nodes that train the tuning stage's trials and these grid trials under the spec's
    strategy. ValueError when WSD branches cannot serve them (see `branch_plan`)."""
    full = sum(t.flops for t in trials)
    tuned = [Node(t, kind="tuning", own_flops=t.flops) for t in tuning]
    wsd = spec.strategy.wsd_branches
    if wsd is None:
        return Graph(tuple(tuned + [Node(t, own_flops=t.flops) for t in trials]), full)
    stable, branches = branch_plan(trials, Wsd(wsd.cooldown), spec.training.warmup_fraction)
    nodes: list[Node] = list(tuned)
    segment_of: dict[tuple[str, int], str] = {}
    for run, sr in stable.items():
        mine = sorted(
            (b for b in branches if run_name(b.trial) == run),
            key=lambda b: (b.branch_step, b.trial.budget),
        )
        previous: Node | None = None
        for end in sr.branch_points:
            first = next(b.trial for b in mine if b.branch_step == end)
            stand_in = _prefix(first, end, stable_id(run, first.budget))
            node = Node(
                stand_in,
                kind="stable",
                after=previous.id if previous else None,
                run=run,
                warmup_steps=sr.warmup_steps,
                start_step=previous.trial.steps if previous else 0,
                own_flops=stand_in.flops - (previous.trial.flops if previous else 0),
            )
            nodes.append(node)
            segment_of[run, end] = node.id
            previous = node
    for b in branches:
        t, run = b.trial, run_name(b.trial)
        nodes.append(
            Node(
                t,
                kind="branch",
                after=segment_of[run, b.branch_step],
                run=run,
                warmup_steps=stable[run].warmup_steps,
                branch_step=b.branch_step,
                own_flops=t.flops - _prefix(t, b.branch_step, t.id).flops,
            )
        )
    return Graph(tuple(nodes), full)


def _prefix(trial: Trial, steps: int, node_id: str) -> Trial:
    """The first `steps` steps of a trial's run, as a trial of its own (a stable segment)."""
    samples = steps * trial.batch_size
    return replace(
        trial,
        id=node_id,
        steps=steps,
        samples=samples,
        tokens=samples * trial.tokens_per_sample,
        flops=samples * trial.flops_per_sample,
        flops_exact=trial.flops_exact * samples // trial.samples,
        flops_6nd=trial.flops_6nd * samples // trial.samples,
    )


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
    Strategy("adaptive ladder (5 rungs, stride 3)", adaptive=Adaptive(rungs=5)),
    Strategy("adaptive + wsd branches", adaptive=Adaptive(rungs=5), wsd=Wsd(0.2)),
)
