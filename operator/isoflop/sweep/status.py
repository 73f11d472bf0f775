"""The status document both drivers write (the resource's status, a local run's status.json):
the trials' records and per-budget summaries, the counts, the fit, the strategy's compute, the
confirmations with their verdicts, and the conditions. Pure, like the engine it reads."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal

from isoflop import api
from isoflop.fit.rates import RateLaw
from isoflop.sweep.confirm import resources_spec, trial_of, verdict
from isoflop.sweep.engine import ACTIVE, ERROR_CHARS, Decision, Sweep, TrialState, resolve
from isoflop.sweep.plan import Plan, batch_unit
from isoflop.sweep.tuning import Stage


def budget_summaries(
    spec: api.ScalingSweepSpec, plan: Plan, records: list[api.TrialRecord]
) -> list[api.BudgetSummary]:
    """Per-budget counts and the best trial so far, from the trial records (stable segments and
    tuning trials are no budget's points)."""
    budget_of = {t.id: t.budget for t in plan.trials} | {i.id: i.budget for i in plan.infeasible}
    by_budget: dict[float, list[api.TrialRecord]] = {b: [] for b in spec.budgets}
    for r in records:
        if r.kind not in ("stable", "tuning"):
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
                queued=sum(r.phase == "Queued" for r in mine),
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
    and tuning trials among them), the trials it skipped, and the infeasible ones."""
    records = []
    planned = {n.id for n in sweep.graph.planned(sweep.skipped)}
    if sweep.tuning is not None:
        planned |= sweep.tuning.chosen
    batches = sweep.tuning is not None and bool(sweep.tuning.batch_groups)
    for n in sweep.graph.nodes:
        t = n.trial
        s = sweep.states.get(t.id, TrialState())
        phase: api.TrialPhase
        if t.id not in planned and s.phase == "Pending":  # left out, or no branch needs it
            phase = "Skipped"
        elif s.phase == "Queued":
            phase = "Queued"
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
                learning_rate=t.learning_rate,
                global_batch_size=t.batch_size if batches else None,
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


def tuning_status(sweep: Sweep) -> api.TuningStatus | None:
    """The tuning stage's groups, laws and compute; None without one."""
    stage = sweep.tuning
    if stage is None:
        return None
    trials = [n.trial for n in sweep.graph.nodes if n.kind == "tuning" and n.id in stage.chosen]
    flops = float(sum(t.flops for t in trials))
    full = sweep.graph.full_grid_flops
    succeeded = sum(sweep.state(t.id).phase == "Succeeded" for t in trials)
    batch = {(g.budget, g.rung): g for g in stage.batch_groups}
    groups = []
    for g in stage.groups:
        b = batch.get((g.budget, g.rung))
        groups.append(
            api.RateGroup(
                budget=g.budget,
                rung=g.rung,
                params=g.params,
                tokens=g.tokens,
                trials=len(g.chosen),
                settled=g.settled,
                best_learning_rate=g.best,
                edge=g.edge,
                problem=g.problem,
                **(
                    {
                        "batch_trials": len(b.chosen),
                        "batch_settled": b.settled,
                        "best_batch_size": b.best,
                        "batch_edge": b.edge,
                        "batch_problem": b.problem,
                    }
                    if b is not None
                    else {}
                ),
            )
        )
    phase: Literal["Tuning", "Tuned", "Failed"]
    if stage.problem is not None:
        phase, message = "Failed", stage.problem
    elif stage.ready:
        assert stage.law is not None
        message = f"every grid trial trains at {stage.law.words}"
        if stage.batch_law is not None:
            message += f" and {stage.batch_law.words}"
        phase = "Tuned"
    else:
        settled = sum(g.settled for g in stage.batch_groups or stage.groups)
        phase, message = "Tuning", f"{settled}/{len(stage.groups)} rungs settled"
    return api.TuningStatus(
        phase=phase,
        message=message,
        trials=len(trials),
        succeeded=succeeded,
        planned_flops=flops,
        grid_fraction=round(flops / full, 4) if full else 0.0,
        groups=groups,
        law=rate_law(stage.law),
        batch_law=rate_law(stage.batch_law),
    )


def rate_law(x: RateLaw | None) -> api.RateLaw | None:
    """A fitted learning-rate or batch law as the status holds it."""
    if x is None:
        return None
    return api.RateLaw(
        form=x.form,
        description=x.words,
        coefficient=x.coefficient,
        params_exponent=x.params_exponent,
        tokens_exponent=x.tokens_exponent,
        compute_exponent=x.compute_exponent,
        points=x.points,
        residual_std=x.residual_std,
        **{
            f"{name}_interval" if name == "coefficient" else f"{name}_exponent_interval": (
                api.Interval(low=ci.low, high=ci.high) if ci is not None else None
            )
            for name, ci in x.intervals.items()
        },
    )


def results_table(
    plan: Plan, states: Mapping[str, TrialState], spec: api.ScalingSweepSpec | None = None
) -> list[dict[str, float]]:
    """Rows for `isoflop.fit`: every succeeded trial of the plan with the metrics that every one
    of them measured (a metric some trials lack cannot be fitted across budgets), at the tokens
    it trained: where the tuning stage sets batches (`spec` given), its resized steps'."""
    grid = plan.trials
    if spec is not None and spec.tuning is not None and spec.tuning.global_batch_sizes:
        trained = {n.id: n.trial for n in resolve(spec, plan, states).graph.nodes}
        grid = tuple(trained.get(t.id, t) for t in grid)
    done = [
        (t, s)
        for t in grid
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


def sweep_status(
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
    sweep = resolve(spec, plan, states)
    confirmed = confirmation_records(
        kept, states, 1 + spec.retries.per_trial, sweep.tuning, resources_spec(spec)
    )
    wanted = wanted_conditions(decision, fit, data)
    if spec.confirm:
        wanted.append(confirmed_condition(confirmed))
    conditions = _conditions(previous or [], now, wanted)
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
        tuning=tuning_status(sweep),
        data=data,
        confirmations=confirmed,
    )


def confirmation_records(
    confirmations: Sequence[api.Confirmation],
    states: Mapping[str, TrialState],
    limit: int,
    tuning: Stage | None = None,
    trained: api.ScalingSweepSpec | None = None,
) -> list[api.Confirmation]:
    """The stored confirmations with where their runs stand: a measured one with its verdict;
    with a tuning stage's laws (and `trained`, the spec confirmations train under), the rate
    and batch each trains at."""
    out = []
    for c in confirmations:
        if tuning is not None and trained is not None and tuning.ready and c.depth is not None:
            c = c.model_copy(update=tuned_fields(trained, tuning, c))
        s = states.get(c.trial)
        if c.phase in ("Infeasible", "Succeeded") or s is None:
            out.append(c)
        elif s.phase == "Succeeded" and s.loss is not None:
            out.append(
                verdict(c, s.loss, dict(s.metrics)).model_copy(update={"attempts": s.attempts})
            )
        else:
            phase: api.TrialPhase = "Pending"
            if s.phase in ACTIVE:
                phase = "Queued" if s.phase == "Queued" else "Running"
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


def tuned_fields(spec: api.ScalingSweepSpec, tuning: Stage, c: api.Confirmation) -> dict[str, Any]:
    """What the tuning laws give a confirmation's model at its budget, as the engine trains it
    (`spec`: the spec it trains under): its rate, and where batches are tuned its batch, steps
    and tokens; nothing for a model it cannot train."""
    try:
        trial = replace(tuning, unit=batch_unit(spec)).tuned(trial_of(spec, c))
    except ValueError:
        return {}
    out: dict[str, Any] = {"learning_rate": trial.learning_rate}
    if tuning.batch_law is not None:
        out |= {"global_batch_size": trial.batch_size, "steps": trial.steps, "tokens": trial.tokens}
    return out


def confirmed_condition(confirmations: Sequence[api.Confirmation]) -> tuple[str, bool, str, str]:
    """Confirmed: True when every confirmation measured a loss inside its interval; False with
    the sentence of the first that did not, or of what it waits for."""
    if not confirmations:
        return ("Confirmed", False, "WaitingForLaws", "the final laws are not fitted yet")
    for c in confirmations:
        if c.phase == "Infeasible":
            reason = "NotPredicted" if c.params is None else "Infeasible"
            return ("Confirmed", False, reason, c.message or "not trained")
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
