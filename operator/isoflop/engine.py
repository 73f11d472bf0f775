"""The sweep engine: spec + plan + the observed state of every trial -> what to do next.

Pure and deterministic: the same observations give the same decision, so the local runner and the
operator can call it after any restart. It never performs I/O; drivers apply its decisions.

Trial life cycle, as drivers report it:
    Pending (never launched) -> Starting (launched, not running yet) -> Running -> Succeeded|Failed
A failed attempt is relaunched until it has had 1 + retries.perTrial attempts; after that the trial
has failed for good, and when more than retries.maxFailedTrials trials have, the sweep fails.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from isoflop import api
from isoflop.plan import Plan, Trial

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
    trial: Trial
    attempt: int  # 1 for the first launch; drivers name their processes or Jobs by it


@dataclass(frozen=True)
class Cancel:
    trial_id: str
    reason: str


@dataclass(frozen=True)
class Decision:
    phase: api.Phase
    launches: tuple[Launch, ...] = ()
    cancels: tuple[Cancel, ...] = ()
    gave_up: tuple[str, ...] = ()  # trials that failed for good
    complete_budgets: tuple[float, ...] = ()  # budgets with every trial finished
    fit_due: bool = False  # complete budgets changed since the last fit
    reason: str = ""
    message: str = ""
    counts: dict[str, int] = field(default_factory=dict)


def decide(
    spec: api.ScalingSweepSpec,
    plan: Plan,
    states: Mapping[str, TrialState],
    fitted: tuple[float, ...] = (),
) -> Decision:
    """The next actions and the sweep's phase."""
    limit = 1 + spec.retries.per_trial

    def state(trial_id: str) -> TrialState:
        return states.get(trial_id, TrialState())

    planned = {t.id for t in plan.trials}
    cancels = tuple(
        Cancel(tid, "its budget or rung was removed from the spec")
        for tid, s in sorted(states.items())
        if tid not in planned and s.phase == "Starting"
    )
    gave_up = tuple(t.id for t in plan.trials if state(t.id).exhausted(limit))
    active = [t.id for t in plan.trials if state(t.id).phase in ACTIVE]
    active += [tid for tid, s in states.items() if tid not in planned and s.phase == "Running"]
    succeeded = [t for t in plan.trials if state(t.id).phase == "Succeeded"]
    counts = {
        "total": len(plan.trials),
        "pending": sum(state(t.id).phase == "Pending" for t in plan.trials),
        "running": len(active),
        "succeeded": len(succeeded),
        "failed": len(gave_up),
        "infeasible": len(plan.infeasible),
    }
    if len(gave_up) > spec.retries.max_failed_trials:
        return Decision(
            phase="Failed",
            cancels=cancels + tuple(Cancel(tid, "the sweep failed") for tid in sorted(active)),
            gave_up=gave_up,
            reason="TooManyFailedTrials",
            message=f"{len(gave_up)} trials failed for good, more than "
            f"retries.maxFailedTrials ({spec.retries.max_failed_trials}): {', '.join(gave_up[:5])}"
            + (f"; {gave_up[0]}: {first}" if (first := state(gave_up[0]).error) else ""),
            counts=counts,
        )

    # launch: retries and new trials, smallest budgets (then smallest models) first
    slots = spec.parallelism - len(active)
    candidates = [
        t
        for t in plan.trials
        if state(t.id).phase == "Pending"
        or (state(t.id).phase == "Failed" and not state(t.id).exhausted(limit))
    ]
    candidates.sort(key=lambda t: (t.budget, t.params, t.id))
    launches = tuple(Launch(t, state(t.id).attempts + 1) for t in candidates[: max(slots, 0)])

    terminal = {t.id for t in succeeded} | set(gave_up)
    complete = tuple(
        b
        for b in sorted({t.budget for t in plan.trials})
        if all(t.id in terminal for t in plan.trials if t.budget == b)
    )
    usable = tuple(b for b in complete if sum(1 for t in succeeded if t.budget == b) >= MIN_POINTS)
    fit_due = len(usable) >= 2 and usable != tuple(fitted)
    all_done = len(terminal) == len(plan.trials) and not active
    done = f"{len(terminal)}/{len(plan.trials)} trials finished"
    if all_done:
        if len(usable) < 2:
            return Decision(
                phase="Failed",
                cancels=cancels,
                gave_up=gave_up,
                complete_budgets=complete,
                reason="NotEnoughResults",
                message=f"every trial finished, but only {len(usable)} budget(s) have "
                f"{MIN_POINTS} or more successful trials; scaling laws need 2",
                counts=counts,
            )
        phase: api.Phase = "Fitting" if fit_due else "Succeeded"
        return Decision(
            phase=phase,
            cancels=cancels,
            gave_up=gave_up,
            complete_budgets=usable,
            fit_due=fit_due,
            reason="Fitted" if not fit_due else "Fitting",
            message=done,
            counts=counts,
        )
    started = any(state(t.id).attempts > 0 for t in plan.trials) or launches
    return Decision(
        phase="Running" if started else "Pending",
        launches=launches,
        cancels=cancels,
        gave_up=gave_up,
        complete_budgets=usable,
        fit_due=fit_due,
        reason="TrialsRunning" if started else "Planned",
        message=done,
        counts=counts,
    )


# ------------------------------------------------------------------------------------------------
# status


def budget_summaries(
    spec: api.ScalingSweepSpec, plan: Plan, records: list[api.TrialRecord]
) -> list[api.BudgetSummary]:
    """Per-budget counts and the best trial so far, from the trial records."""
    budget_of = {t.id: t.budget for t in plan.trials} | {i.id: i.budget for i in plan.infeasible}
    by_budget: dict[float, list[api.TrialRecord]] = {b: [] for b in spec.budgets}
    for r in records:
        by_budget[budget_of[r.id]].append(r)
    out = []
    for budget in sorted(spec.budgets):
        mine = by_budget[budget]
        done = [r for r in mine if r.phase == "Succeeded" and r.loss is not None]
        best = min(done, key=lambda r: (r.loss, r.id)) if done else None
        out.append(
            api.BudgetSummary(
                budget=budget,
                trials=sum(r.phase != "Infeasible" for r in mine),
                succeeded=len(done),
                failed=sum(r.phase == "Failed" for r in mine),
                running=sum(r.phase == "Running" for r in mine),
                pending=sum(r.phase == "Pending" for r in mine),
                infeasible=sum(r.phase == "Infeasible" for r in mine),
                best_trial=best.id if best else None,
                best_loss=best.loss if best else None,
            )
        )
    return out


def trial_records(
    plan: Plan, states: Mapping[str, TrialState], limit: int
) -> list[api.TrialRecord]:
    """Compact per-trial records for the status (infeasible trials included)."""
    records = []
    for t in plan.trials:
        s = states.get(t.id, TrialState())
        phase: api.TrialPhase
        if s.phase in ACTIVE:
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
            )
        )
    records += [
        api.TrialRecord(id=i.id, phase="Infeasible", params=i.params, tokens=0)
        for i in plan.infeasible
    ]
    return records


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
) -> api.ScalingSweepStatus:
    """The status document both drivers write (the resource's status, the run's status.json)."""
    c = decision.counts
    finished = c.get("succeeded", 0) + c.get("failed", 0)
    ready = decision.phase == "Succeeded"
    wanted = [
        ("Ready", ready, decision.reason, decision.message),
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
    conditions = _conditions(previous or [], now, wanted)
    records = trial_records(plan, states, 1 + spec.retries.per_trial)
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
        data=data,
    )


def _conditions(
    previous: list[api.Condition], now: str, wanted: list[tuple[str, bool, str, str]]
) -> list[api.Condition]:
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
