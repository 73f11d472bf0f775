"""The sweep engine: spec + plan + the observed state of every trial -> what to do next.

Pure and deterministic: the same observations give the same decision, so the local runner and the
operator can call it after any restart. It never performs I/O; drivers apply its decisions.

Trial life cycle, as drivers report it:
    Pending (never launched) -> Starting (launched, not running yet) -> Running -> Succeeded|Failed
with Queued beside Starting and Running: launched into a cluster's queue (Kueue) and not admitted
yet, or evicted by it and waiting again. A queued trial counts towards parallelism like a running
one; an eviction is no failed attempt.
A failed attempt is relaunched until it has had 1 + retries.perTrial attempts; after that the trial
has failed for good, and when more than retries.maxFailedTrials trials have, the sweep fails.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any, Literal

from isoflop import api
from isoflop.sweep.confirm import is_confirmation, resources_spec, trial_of
from isoflop.sweep.packing import Packing
from isoflop.sweep.plan import Plan, Trial, batch_unit
from isoflop.sweep.strategy import Adaptive, Graph, Node, adapt, graph
from isoflop.sweep.tuning import Stage, stage

TrialPhase = Literal["Pending", "Starting", "Queued", "Running", "Succeeded", "Failed"]
ACTIVE: tuple[TrialPhase, ...] = ("Starting", "Queued", "Running")  # launched, not finished
MIN_POINTS = 3  # trials a budget needs for its parabola
ERROR_CHARS = 300  # of a failed trial's error, kept in its status record


@dataclass(frozen=True)
class TrialState:
    """What a driver knows about one trial."""

    phase: TrialPhase = "Pending"
    attempts: int = 0  # launches so far
    loss: float | None = None
    metrics: tuple[tuple[str, float], ...] = ()
    source: api.ResultSource | None = None
    error: str | None = None
    permanent: bool = False  # failed in a way no retry mends (the data is missing): never retried

    def finish(
        self, loss: float, metrics: Mapping[str, float], source: api.ResultSource
    ) -> TrialState:
        return replace(
            self,
            phase="Succeeded",
            loss=loss,
            metrics=tuple(sorted(metrics.items())),
            source=source,
            error=None,
        )

    def fail(self, error: str, permanent: bool = False) -> TrialState:
        return replace(self, phase="Failed", error=error, permanent=permanent)

    def done(self, limit: int) -> bool:
        """Succeeded, or failed for good."""
        return self.phase == "Succeeded" or self.exhausted(limit)

    def exhausted(self, limit: int) -> bool:
        """Failed for good: out of attempts, or failed in a way no retry mends."""
        return self.phase == "Failed" and (self.permanent or self.attempts >= limit)

    @property
    def failed_attempts(self) -> int:
        """Attempts that ended in failure: all of a Failed trial's, the earlier ones of a trial
        that is running again, none once it succeeded."""
        if self.phase == "Failed":
            return self.attempts
        if self.phase in ACTIVE:
            return max(self.attempts - 1, 0)
        return 0


@dataclass(frozen=True)
class Launch:
    node: Node  # what to train: a grid trial, a WSD branch, or a stable segment
    attempt: int  # 1 for the first launch; drivers name their processes or Jobs by it

    @property
    def trial(self) -> Trial:
        return self.node.trial


@dataclass(frozen=True)
class Cancel:
    trial_id: str
    reason: str


@dataclass(frozen=True)
class Decision:
    phase: api.Phase
    launches: tuple[Launch, ...] = ()
    cancels: tuple[Cancel, ...] = ()
    gave_up: tuple[str, ...] = ()  # trials (and stable segments) that failed for good
    complete_budgets: tuple[float, ...] = ()  # budgets with every trial finished
    fit_due: bool = False  # complete budgets changed since the last fit
    reason: str = ""
    message: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    skipped: tuple[str, ...] = ()  # grid trials the adaptive ladder left out
    confirm_due: bool = False  # the final laws stand: predict the confirmations (spec.confirm)


@dataclass(frozen=True)
class Sweep:
    """The spec's plan as its strategy trains it, and where the strategy's decisions stand."""

    graph: Graph  # the grid's trials at the tuning law's rates once it stands
    states: Mapping[str, TrialState]  # a failed stable run's dependants failed with it
    chosen: frozenset[str]  # grid trials to train (so far)
    skipped: frozenset[str]  # grid trials the adaptive ladder left out
    settled: tuple[float, ...]  # budgets whose choice of trials is final
    tuning: Stage | None = None  # the tuning stage (spec.tuning): its choice, then its law

    @property
    def grid_ready(self) -> bool:
        """The grid may train: no tuning stage, or its law stands."""
        return self.tuning is None or self.tuning.ready

    def state(self, trial_id: str) -> TrialState:
        return self.states.get(trial_id, TrialState())


def resolve(spec: api.ScalingSweepSpec, plan: Plan, states: Mapping[str, TrialState]) -> Sweep:
    """The strategy's nodes, their effective states, the tuning stage and the adaptive
    ladder's choice. Once the tuning stage's law stands, the grid's trials carry its rates."""
    limit = 1 + spec.retries.per_trial
    tuned = {
        t.id
        for t in plan.tuning
        if (s := states.get(t.id)) is not None and (s.phase == "Succeeded" or s.exhausted(limit))
    }
    rate_losses = {tid: s.loss for tid in tuned if (s := states[tid]).loss is not None}
    tuning = stage(spec, plan.tuning, rate_losses, tuned)
    grid, stage_trials = plan.trials, plan.tuning
    if tuning is not None:
        stage_trials = tuple(tuning.prepared(t) for t in stage_trials)  # batch trials' rates
        if tuning.ready:
            grid = tuple(tuning.tuned(t) for t in grid)
    g = graph(spec, grid, stage_trials)
    effective = dict(states)
    for n in g.nodes:  # parents come before their children
        parent = effective.get(n.after) if n.after else None
        mine = effective.get(n.id, TrialState())
        if parent is not None and parent.exhausted(limit) and mine.phase != "Succeeded":
            error = f"its stable run {n.after} failed for good"
            if parent.error and parent.error.startswith("its stable run"):
                error = parent.error  # the segment that failed, not the one between
            effective[n.id] = mine.fail(error, permanent=True)
    adaptive = spec.strategy.adaptive
    if adaptive is None:
        chosen = frozenset(t.id for t in grid)
        budgets = tuple(sorted({t.budget for t in grid}))
        return Sweep(g, effective, chosen, frozenset(), budgets, tuning)
    finished = {
        t.id
        for t in grid
        if (s := effective.get(t.id)) is not None and (s.phase == "Succeeded" or s.exhausted(limit))
    }
    losses = {tid: s.loss for tid in finished if (s := effective[tid]).loss is not None}
    choice = adapt(
        grid, Adaptive(adaptive.seed_budgets, adaptive.rungs, adaptive.stride), losses, finished
    )
    return Sweep(g, effective, choice.chosen, choice.skipped, choice.settled, tuning)


@dataclass(frozen=True)
class Tally:
    """Where the trials stand: what runs, what finished, what failed for good, the counts."""

    grid: list[Trial]  # the grid trials still wanted (the adaptive ladder's skips left out)
    active: list[str]  # starting or running: grid trials, stable segments, an old plan's trials
    succeeded: list[Trial]
    failed: list[str]  # grid trials failed for good
    cancels: tuple[Cancel, ...]  # Jobs of trials no longer in the plan
    gave_up: tuple[str, ...]
    counts: dict[str, int]


def tally(spec: api.ScalingSweepSpec, plan: Plan, sweep: Sweep) -> Tally:
    limit = 1 + spec.retries.per_trial
    nodes, state = sweep.graph.nodes, sweep.state
    planned = set(sweep.graph.by_id)
    grid = [t for t in plan.trials if t.id not in sweep.skipped]
    # trials of an older plan (confirmation runs are confirm_step's)
    older = {
        tid: s
        for tid, s in sorted(sweep.states.items())
        if tid not in planned and not is_confirmation(tid)
    }
    cancels = tuple(
        Cancel(tid, "its budget or rung was removed from the spec")
        for tid, s in older.items()
        if s.phase in ("Starting", "Queued")
    )
    active = [n.id for n in nodes if state(n.id).phase in ACTIVE]
    active += [t for t, s in older.items() if s.phase == "Running"]
    queued = [tid for tid in active if state(tid).phase == "Queued"]
    starting = [tid for tid in active if state(tid).phase == "Starting"]
    succeeded = [t for t in grid if state(t.id).phase == "Succeeded"]
    failed = [t.id for t in grid if state(t.id).exhausted(limit)]
    counts = {
        "total": len(grid),
        "pending": sum(state(t.id).phase == "Pending" for t in grid),
        "running": len(active) - len(queued) - len(starting),  # stable segments train too
        "starting": len(starting),  # launched, no pod running yet (created, pulling, unplaced)
        "queued": len(queued),  # launched, waiting for the cluster's queue to admit them
        "succeeded": len(succeeded),
        "failed": len(failed),
        "infeasible": len(plan.infeasible),
        "skipped": len(sweep.skipped),
    }
    gave_up = tuple(n.id for n in nodes if state(n.id).exhausted(limit))
    return Tally(grid, active, succeeded, failed, cancels, gave_up, counts)


def decide(
    spec: api.ScalingSweepSpec,
    plan: Plan,
    states: Mapping[str, TrialState],
    fitted: tuple[float, ...] = (),
    confirmations: Sequence[api.Confirmation] = (),
) -> Decision:
    """The next actions and the sweep's phase. Once every trial has finished and the final laws
    are fitted, spec.confirm's runs: first `confirm_due` (the driver predicts and stores them),
    then their launches, never before."""
    sweep = resolve(spec, plan, states)
    t = tally(spec, plan, sweep)
    said: dict[str, Any] = {
        "gave_up": t.gave_up,
        "counts": t.counts,
        "skipped": tuple(sorted(sweep.skipped)),
    }
    if len(t.failed) > spec.retries.max_failed_trials:  # grid trials: segments are no points
        first = sweep.state(t.failed[0]).error
        return Decision(
            phase="Failed",
            cancels=t.cancels + tuple(Cancel(tid, "the sweep failed") for tid in sorted(t.active)),
            reason="TooManyFailedTrials",
            message=f"{len(t.failed)} trials failed for good, more than "
            f"retries.maxFailedTrials ({spec.retries.max_failed_trials}): "
            f"{', '.join(t.failed[:5])}" + (f"; {t.failed[0]}: {first}" if first else ""),
            **said,
        )
    tuning = sweep.tuning
    if tuning is not None and tuning.problem is not None:  # no law through an edge
        return Decision(
            phase="Failed",
            cancels=t.cancels + tuple(Cancel(tid, "the sweep failed") for tid in sorted(t.active)),
            reason="TuningFailed",
            message=tuning.problem,
            **said,
        )
    launches = pick_launches(spec, sweep, t.active)
    terminal = {x.id for x in t.succeeded} | set(t.failed)
    complete = tuple(
        b for b in sweep.settled if all(x.id in terminal for x in t.grid if x.budget == b)
    )
    usable = tuple(
        b for b in complete if sum(1 for x in t.succeeded if x.budget == b) >= MIN_POINTS
    )
    fit_due = len(usable) >= 2 and usable != tuple(fitted)
    done = f"{len(terminal)}/{len(t.grid)} trials finished"
    if tuning is not None and not tuning.done:
        settled = sum(g.settled for g in tuning.batch_groups or tuning.groups)  # rate first
        done = (
            f"tuning the learning rate{' and batch' if tuning.batch_groups else ''}: "
            f"{settled}/{len(tuning.groups)} rungs settled, "
            f"{len(tuning.chosen & set(sweep.states))} of {len(tuning.chosen)} trials started; "
            + done
        )
    if t.counts["queued"]:
        done += f"; {t.counts['running']} running, {t.counts['queued']} waiting in the queue"
    if len(terminal) == len(t.grid) and not t.active:  # every trial finished
        if len(usable) < 2:
            return Decision(
                phase="Failed",
                cancels=t.cancels,
                complete_budgets=complete,
                reason="NotEnoughResults",
                message=f"every trial finished, but only {len(usable)} budget(s) have "
                f"{MIN_POINTS} or more successful trials; scaling laws need 2",
                **said,
            )
        if not fit_due and spec.confirm:
            confirming = confirm_step(spec, states, confirmations, tuning)
            if confirming is not None:
                phase, reason, message, launches, due = confirming
                return Decision(
                    phase=phase,
                    launches=launches,
                    cancels=t.cancels,
                    complete_budgets=usable,
                    reason=reason,
                    message=message,
                    confirm_due=due,
                    **said,
                )
        return Decision(
            phase="Fitting" if fit_due else "Succeeded",
            cancels=t.cancels,
            complete_budgets=usable,
            fit_due=fit_due,
            reason="Fitting" if fit_due else "Fitted",
            message=done,
            **said,
        )
    started = any(sweep.state(n.id).attempts > 0 for n in sweep.graph.nodes) or launches
    return Decision(
        phase="Running" if started else "Pending",
        launches=launches,
        cancels=t.cancels,
        complete_budgets=usable,
        fit_due=fit_due,
        reason="TrialsRunning" if started else "Planned",
        message=done,
        **said,
    )


Confirming = tuple[api.Phase, str, str, tuple[Launch, ...], bool]


def confirm_step(
    spec: api.ScalingSweepSpec,
    states: Mapping[str, TrialState],
    confirmations: Sequence[api.Confirmation],
    tuning: Stage | None = None,
) -> Confirming | None:
    """After the final fit: (phase, reason, message, launches, confirm_due) while spec.confirm's
    runs are not all predicted and finished; None once they are. A confirmation counts a slot
    of `parallelism` each and is retried like a trial; one that fails for good ends with its
    error in its record, and the sweep still succeeds (its laws stand). With a tuning stage, a
    confirmation trains at its law's rate, like the grid."""
    confirmations = [c for c in confirmations if c.budget in spec.confirm]  # budgets removed
    stored = {c.budget for c in confirmations}
    if any(b not in stored for b in spec.confirm):
        return ("Confirming", "Predicting", "predicting the confirmation runs", (), True)
    limit = 1 + spec.retries.per_trial
    wanted = [c for c in confirmations if c.phase not in ("Infeasible", "Succeeded")]
    open_ = [c for c in wanted if not states.get(c.trial, TrialState()).done(limit)]
    if not open_:
        return None
    active = sum(states.get(c.trial, TrialState()).phase in ACTIVE for c in open_)
    room = spec.parallelism - active
    trained = resources_spec(spec)
    launches = []
    for c in sorted(open_, key=lambda c: c.budget):
        s = states.get(c.trial, TrialState())
        if s.phase == "Pending" or (s.phase == "Failed" and not s.exhausted(limit)):
            if room <= 0:
                break
            room -= 1
            trial = trial_of(trained, c)
            if tuning is not None and tuning.ready:  # its batch splits over its own GPUs
                trial = replace(tuning, unit=batch_unit(trained)).tuned(trial)
            launches.append(Launch(Node(trial), s.attempts + 1))
    done = len(confirmations) - len(open_)
    return (
        "Confirming",
        "Confirming",
        f"every trial finished; {done}/{len(confirmations)} confirmation runs finished",
        tuple(launches),
        False,
    )


def pick_launches(
    spec: api.ScalingSweepSpec, sweep: Sweep, active: list[str]
) -> tuple[Launch, ...]:
    """Retries and new trials, the tuning stage's first and the grid's once its law stands, then
    smallest budgets (then smallest models) first, while the sweep's parallelism has room (a
    trial packed k to a GPU takes 1/k of a slot: spec.resources.packing); a branch or segment
    once the segment before it has succeeded (its checkpoint exists)."""
    limit = 1 + spec.retries.per_trial
    state, by_id = sweep.state, sweep.graph.by_id
    # what is wanted: the chosen grid trials, and the stable segments their open branches need
    reach: dict[str | None, int] = {}  # each stable run: the furthest branch point still needed
    for n in sweep.graph.nodes:
        if n.kind == "branch" and n.id in sweep.chosen and not state(n.id).done(limit):
            reach[n.run] = max(reach.get(n.run, 0), n.branch_step)

    def wanted(n: Node) -> bool:
        if n.kind == "tuning":
            return sweep.tuning is not None and n.id in sweep.tuning.chosen
        if not sweep.grid_ready:
            return False
        if n.kind == "stable":
            return n.trial.steps <= reach.get(n.run, 0)
        return n.id in sweep.chosen

    def ready(n: Node) -> bool:
        return n.after is None or state(n.after).phase == "Succeeded"

    def due(n: Node) -> bool:
        s = state(n.id)
        return s.phase == "Pending" or (s.phase == "Failed" and not s.exhausted(limit))

    packing = Packing.of(spec)
    used = sum((packing.share(by_id[i].trial) for i in active if i in by_id), Fraction(0))
    used += sum(1 for i in active if i not in by_id)  # trials of an older plan: a slot each
    candidates = [n for n in sweep.graph.nodes if wanted(n) and ready(n) and due(n)]
    candidates.sort(key=lambda n: (n.kind != "tuning", n.trial.budget, n.trial.params, n.id))
    picked: list[Launch] = []
    for n in candidates:
        share = packing.share(n.trial)
        if used + share > spec.parallelism:
            break  # in order: a large trial is not overtaken by smaller ones forever
        used += share
        picked.append(Launch(n, state(n.id).attempts + 1))
    return tuple(picked)
