"""The sweep engine: spec + plan + the observed state of every trial -> what to do next.

Pure and deterministic: the same observations give the same decision, so the local runner and the
operator can call it after any restart. It never performs I/O; drivers apply its decisions.

Trial life cycle, as drivers report it:
    Pending (never launched) -> Starting (launched, not running yet) -> Running -> Succeeded|Failed
A failed attempt is relaunched until it has had 1 + retries.perTrial attempts; after that the trial
has failed for good, and when more than retries.maxFailedTrials trials have, the sweep fails.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any, Literal

from isoflop import api
from isoflop.sweep.confirm import is_confirmation, resources_spec, trial_of, verdict
from isoflop.sweep.packing import Packing
from isoflop.sweep.plan import Plan, Trial
from isoflop.sweep.strategy import Adaptive, Graph, Node, adapt, graph

TrialPhase = Literal["Pending", "Starting", "Running", "Succeeded", "Failed"]
ACTIVE: tuple[TrialPhase, ...] = ("Starting", "Running")
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

    graph: Graph
    states: Mapping[str, TrialState]  # a failed stable run's dependants failed with it
    chosen: frozenset[str]  # grid trials to train (so far)
    skipped: frozenset[str]  # grid trials the adaptive ladder left out
    settled: tuple[float, ...]  # budgets whose choice of trials is final

    def state(self, trial_id: str) -> TrialState:
        return self.states.get(trial_id, TrialState())


def resolve(spec: api.ScalingSweepSpec, plan: Plan, states: Mapping[str, TrialState]) -> Sweep:
    """The strategy's nodes, their effective states and the adaptive ladder's choice."""
    limit = 1 + spec.retries.per_trial
    g = graph(spec, plan.trials)
    effective = dict(states)
    for n in g.nodes:  # parents come before their children
        parent = effective.get(n.after) if n.after else None
        mine = effective.get(n.id, TrialState())
        if parent is not None and parent.exhausted(limit) and mine.phase != "Succeeded":
            error = f"its stable run {n.after} failed for good"
            if parent.error and parent.error.startswith("its stable run"):
                error = parent.error  # the segment that failed, not the one between
            effective[n.id] = mine.fail(error, permanent=True)
    grid = plan.trials
    adaptive = spec.strategy.adaptive
    if adaptive is None:
        chosen = frozenset(t.id for t in grid)
        return Sweep(g, effective, chosen, frozenset(), tuple(sorted({t.budget for t in grid})))
    finished = {
        t.id
        for t in grid
        if (s := effective.get(t.id)) is not None and (s.phase == "Succeeded" or s.exhausted(limit))
    }
    losses = {tid: s.loss for tid in finished if (s := effective[tid]).loss is not None}
    choice = adapt(
        grid, Adaptive(adaptive.seed_budgets, adaptive.rungs, adaptive.stride), losses, finished
    )
    return Sweep(g, effective, choice.chosen, choice.skipped, choice.settled)


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
        if s.phase == "Starting"
    )
    active = [n.id for n in nodes if state(n.id).phase in ACTIVE]
    active += [t for t, s in older.items() if s.phase == "Running"]
    succeeded = [t for t in grid if state(t.id).phase == "Succeeded"]
    failed = [t.id for t in grid if state(t.id).exhausted(limit)]
    counts = {
        "total": len(grid),
        "pending": sum(state(t.id).phase == "Pending" for t in grid),
        "running": len(active),  # stable segments train too
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
            confirming = confirm_step(spec, states, confirmations)
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
) -> Confirming | None:
    """After the final fit: (phase, reason, message, launches, confirm_due) while spec.confirm's
    runs are not all predicted and finished; None once they are. A confirmation counts a slot
    of `parallelism` each and is retried like a trial; one that fails for good ends with its
    error in its record, and the sweep still succeeds (its laws stand)."""
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
            launches.append(Launch(Node(trial_of(trained, c)), s.attempts + 1))
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
    """Retries and new trials, smallest budgets (then smallest models) first, while the sweep's
    parallelism has room (a trial packed k to a GPU takes 1/k of a slot: spec.resources.packing);
    a branch or segment once the segment before it has succeeded (its checkpoint exists)."""
    limit = 1 + spec.retries.per_trial
    state, by_id = sweep.state, sweep.graph.by_id
    # what is wanted: the chosen grid trials, and the stable segments their open branches need
    reach: dict[str | None, int] = {}  # each stable run: the furthest branch point still needed
    for n in sweep.graph.nodes:
        if n.kind == "branch" and n.id in sweep.chosen and not state(n.id).done(limit):
            reach[n.run] = max(reach.get(n.run, 0), n.branch_step)

    def wanted(n: Node) -> bool:
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
    candidates.sort(key=lambda n: (n.trial.budget, n.trial.params, n.id))
    picked: list[Launch] = []
    for n in candidates:
        share = packing.share(n.trial)
        if used + share > spec.parallelism:
            break  # in order: a large trial is not overtaken by smaller ones forever
        used += share
        picked.append(Launch(n, state(n.id).attempts + 1))
    return tuple(picked)


# ------------------------------------------------------------------------------------------------
# status


def budget_summaries(
    spec: api.ScalingSweepSpec, plan: Plan, records: list[api.TrialRecord]
) -> list[api.BudgetSummary]:
    """Per-budget counts and the best trial so far, from the trial records (stable segments are
    no budget's points)."""
    budget_of = {t.id: t.budget for t in plan.trials} | {i.id: i.budget for i in plan.infeasible}
    by_budget: dict[float, list[api.TrialRecord]] = {b: [] for b in spec.budgets}
    for r in records:
        if r.kind != "stable":
            by_budget[budget_of[r.id]].append(r)
    out = []
    for budget in sorted(spec.budgets):
        mine = by_budget[budget]
        done = [r for r in mine if r.phase == "Succeeded" and r.loss is not None]
        best = min(done, key=lambda r: (r.loss, r.id)) if done else None
        out.append(
            api.BudgetSummary(
                budget=budget,
                trials=sum(r.phase not in ("Infeasible", "Skipped") for r in mine),
                succeeded=len(done),
                failed=sum(r.phase == "Failed" for r in mine),
                running=sum(r.phase == "Running" for r in mine),
                pending=sum(r.phase == "Pending" for r in mine),
                infeasible=sum(r.phase == "Infeasible" for r in mine),
                skipped=sum(r.phase == "Skipped" for r in mine),
                best_trial=best.id if best else None,
                best_loss=best.loss if best else None,
            )
        )
    return out


def trial_records(sweep: Sweep, plan: Plan, limit: int) -> list[api.TrialRecord]:
    """Compact per-trial records for the status: every node the strategy trains (stable segments
    among them), the trials it skipped, and the infeasible ones."""
    records = []
    planned = {n.id for n in sweep.graph.planned(sweep.skipped)}
    for n in sweep.graph.nodes:
        t = n.trial
        s = sweep.states.get(t.id, TrialState())
        phase: api.TrialPhase
        if t.id not in planned and s.phase == "Pending":  # left out, or no branch needs it
            phase = "Skipped"
        elif s.phase in ACTIVE:
            phase = "Running"
        elif s.phase == "Failed" and not s.exhausted(limit):
            phase = "Pending"  # will be retried
        else:
            phase = "Failed" if s.phase == "Failed" else s.phase  # type: ignore[assignment]
        records.append(
            api.TrialRecord(
                id=t.id,
                phase=phase,
                params=t.params,
                tokens=t.tokens,
                attempts=s.attempts,
                loss=s.loss,
                source=s.source,
                metrics=dict(s.metrics) or None,
                error=(s.error or "")[:ERROR_CHARS] or None if phase == "Failed" else None,
                kind=None if n.kind == "trial" else n.kind,
                branched_from=n.after if n.kind == "branch" else None,
                branch_step=n.branch_step if n.kind == "branch" else None,
            )
        )
    records += [
        api.TrialRecord(id=i.id, phase="Infeasible", params=i.params, tokens=0)
        for i in plan.infeasible
    ]
    return records


def strategy_status(spec: api.ScalingSweepSpec, sweep: Sweep) -> api.StrategyStatus | None:
    """The strategy's compute against the full grid's; None for the full grid itself."""
    if spec.strategy.adaptive is None and spec.strategy.wsd_branches is None:
        return None
    planned = sweep.graph.planned(sweep.skipped)
    done = [n for n in planned if sweep.states.get(n.id, TrialState()).phase == "Succeeded"]
    full = sweep.graph.full_grid_flops
    flops = sum(n.own_flops for n in planned)
    return api.StrategyStatus(
        full_grid_flops=full,
        planned_flops=flops,
        compute_fraction=round(flops / full, 4) if full else 1.0,
        spent_flops=sum(n.own_flops for n in done),
        branches=sum(n.kind == "branch" for n in planned),
        stable_segments=sum(n.kind == "stable" for n in planned),
        skipped=len(sweep.skipped),
    )


def results_table(plan: Plan, states: Mapping[str, TrialState]) -> list[dict[str, float]]:
    """Rows for `isoflop.fit`: every succeeded trial of the plan with the metrics that every one
    of them measured (a metric some trials lack cannot be fitted across budgets)."""
    done = [
        (t, s)
        for t in plan.trials
        if (s := states.get(t.id)) is not None and s.phase == "Succeeded" and s.loss is not None
    ]
    common = set.intersection(*(set(dict(s.metrics)) for _, s in done)) if done else set()
    return [
        {
            "budget": t.budget,
            "params": float(t.params),
            "tokens": float(t.tokens),
            "loss": s.loss,  # type: ignore[dict-item]
            **{k: v for k, v in s.metrics if k in common},
        }
        for t, s in done
    ]


def status(
    spec: api.ScalingSweepSpec,
    plan: Plan,
    states: Mapping[str, TrialState],
    decision: Decision,
    fit: api.FitResult | None,
    fitted: tuple[float, ...] = (),
    generation: int | None = None,
    now: str = "",
    previous: list[api.Condition] | None = None,
    data: api.DataStatus | None = None,
    confirmations: Sequence[api.Confirmation] = (),
) -> api.ScalingSweepStatus:
    """The status document both drivers write (the resource's status, the run's status.json)."""
    c = decision.counts
    finished = c.get("succeeded", 0) + c.get("failed", 0)
    kept = [c for c in confirmations if c.budget in spec.confirm]
    confirmed = confirmation_records(kept, states, 1 + spec.retries.per_trial)
    wanted = wanted_conditions(decision, fit, data)
    if spec.confirm:
        wanted.append(confirmed_condition(confirmed))
    conditions = _conditions(previous or [], now, wanted)
    sweep = resolve(spec, plan, states)
    records = trial_records(sweep, plan, 1 + spec.retries.per_trial)
    return api.ScalingSweepStatus(
        fitted_budgets=list(fitted),
        phase=decision.phase,
        observed_generation=generation,
        conditions=conditions,
        flops_accounting=spec.flops_accounting,
        progress=f"{finished}/{c.get('total', 0)}",
        counts=api.TrialCounts(**c),
        budgets=budget_summaries(spec, plan, records),
        trials=records,
        fit=fit,
        strategy=strategy_status(spec, sweep),
        data=data,
        confirmations=confirmed,
    )


def confirmation_records(
    confirmations: Sequence[api.Confirmation], states: Mapping[str, TrialState], limit: int
) -> list[api.Confirmation]:
    """The stored confirmations with where their runs stand: a measured one with its verdict."""
    out = []
    for c in confirmations:
        s = states.get(c.trial)
        if c.phase in ("Infeasible", "Succeeded") or s is None:
            out.append(c)
        elif s.phase == "Succeeded" and s.loss is not None:
            out.append(
                verdict(c, s.loss, dict(s.metrics)).model_copy(update={"attempts": s.attempts})
            )
        else:
            phase: api.TrialPhase = "Running" if s.phase in ACTIVE else "Pending"
            error = None
            if s.exhausted(limit):
                phase, error = "Failed", (s.error or "failed")[:ERROR_CHARS]
                message = f"the confirmation run failed for good: {error}"
            else:
                message = None
            out.append(
                c.model_copy(
                    update={
                        "phase": phase,
                        "attempts": s.attempts,
                        "error": error,
                        "message": message,
                    }
                )
            )
    return out


def confirmed_condition(confirmations: Sequence[api.Confirmation]) -> tuple[str, bool, str, str]:
    """Confirmed: True when every confirmation measured a loss inside its interval; False with
    the sentence of the first that did not, or of what it waits for."""
    if not confirmations:
        return ("Confirmed", False, "WaitingForLaws", "the final laws are not fitted yet")
    for c in confirmations:
        if c.phase == "Infeasible":
            return ("Confirmed", False, "Infeasible", c.message or "not trained")
        if c.phase == "Failed":
            return ("Confirmed", False, "ConfirmationFailed", c.message or "failed")
        if c.measured_loss is None:
            interval = c.loss_interval
            said = f"predicted {c.predicted_loss or math.nan:.4f}" + (
                f" [{interval.low:.4f}, {interval.high:.4f}]" if interval else ""
            )
            return ("Confirmed", False, "Training", f"{c.trial}: {said}; training")
        if c.inside is None:
            return ("Confirmed", False, "NotIdentified", f"{c.trial}: {c.message}")
        if not c.inside:
            return ("Confirmed", False, "Missed", f"{c.trial}: {c.message}")
    said = "; ".join(f"{c.trial}: {c.message}" for c in confirmations)
    return ("Confirmed", True, "Inside", said)


Wanted = list[tuple[str, bool, str, str]]  # (type, true?, reason, message)


def wanted_conditions(
    decision: Decision, fit: api.FitResult | None, data: api.DataStatus | None
) -> Wanted:
    """The conditions a status should hold now: DataReady, Ready, Failed, Fitted, and once laws
    exist Identified and MethodsAgree."""
    wanted: Wanted = [
        ("Ready", decision.phase == "Succeeded", decision.reason, decision.message),
        ("Failed", decision.phase == "Failed", decision.reason, decision.message),
        (
            "Fitted",
            fit is not None,
            "LawsFitted" if fit is not None else "WaitingForBudgets",
            f"laws fitted on {len(decision.complete_budgets)} budgets"
            if fit is not None
            else "fewer than 2 budgets are complete",
        ),
    ]
    if fit is not None and fit.laws.params is not None:
        # a warning condition: a quantity the design cannot pin down is reported as null
        missing = fit.not_identified
        wanted.append(
            (
                "Identified",
                not missing,
                "NotIdentified" if missing else "AllIdentified",
                f"not identified (reported as null): {', '.join(missing)}"
                if missing
                else "every reported interval is identified by the trials",
            )
        )
    if fit is not None and fit.methods_agree is not None:
        wanted.append(
            (
                "MethodsAgree",
                fit.methods_agree,
                "ExponentsAgree" if fit.methods_agree else "ExponentsDisagree",
                "the parabola and parametric N* exponent intervals overlap"
                if fit.methods_agree
                else next((w for w in fit.warnings if w.startswith("the methods disagree")), ""),
            )
        )
    if data is not None:
        reason = {True: "DataFits", False: "InvalidData", None: "CheckingData"}[data.ready]
        wanted.insert(0, ("DataReady", data.ready is True, reason, data.message))
    return wanted


def _conditions(previous: list[api.Condition], now: str, wanted: Wanted) -> list[api.Condition]:
    """Conditions keep their lastTransitionTime unless their status changes."""
    old = {c.type: c for c in previous}
    out = []
    for kind, value, reason, message in wanted:
        status_value: Literal["True", "False"] = "True" if value else "False"
        before = old.get(kind)
        since = before.last_transition_time if before and before.status == status_value else now
        out.append(
            api.Condition(
                type=kind,
                status=status_value,
                reason=reason or "None",
                message=message,
                last_transition_time=since,
            )
        )
    return out
