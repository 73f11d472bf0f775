"""Can a sweep run, and give a law? The plan, the law it can give and the strategy's graph
checked before anything starts, each refusal one sentence naming the field.

Apart from `plan` because it needs the strategy, which builds on the plan.
"""

from __future__ import annotations

from isoflop.api import ManifestError, ScalingSweepSpec
from isoflop.sweep.plan import Plan, plan
from isoflop.sweep.strategy import graph


def runnable_plan(spec: ScalingSweepSpec) -> Plan:
    """The plan of a sweep that can run and give a law, or a ManifestError saying in one sentence
    why not: what `isoflop validate`, `isoflop run` and the operator's admission all check."""
    try:
        p = plan(spec)
    except ValueError as err:
        message = str(err)
        if not message.startswith("spec."):
            message = f"spec.model: the ladder cannot be built: {message}"
        raise ManifestError(message) from None
    if not p.trials:
        largest = [i for i in p.infeasible if i.budget == max(spec.budgets)]
        smallest = min(largest, key=lambda i: i.params)
        raise ManifestError(
            f"spec.budgets: no trial fits any budget (the largest, {max(spec.budgets):g} FLOPs, "
            f"gives the smallest rung '{smallest.rung}' {smallest.steps} steps of batch "
            f"{spec.training.global_batch_size}, fewer than minSteps "
            f"{spec.training.min_steps}): raise the budgets or lower training.minSteps"
        )
    trained = {t.budget for t in p.trials}
    for i, budget in enumerate(spec.budgets):
        if budget not in trained:  # refused, not dropped: the sweep would not be the one asked for
            smallest = min((x for x in p.infeasible if x.budget == budget), key=lambda x: x.params)
            raise ManifestError(
                f"spec.budgets[{i}]: {budget:g} FLOPs trains no model of the ladder (the "
                f"smallest, '{smallest.rung}', gets {smallest.reason}): remove the budget or "
                "raise it"
            )
    short = law_problems(spec, p)
    if short is not None:  # it would run, and end with no law to show for its compute
        raise ManifestError(short)
    if spec.strategy.wsd_branches is not None:
        try:
            graph(spec, p.trials)
        except ValueError as err:
            raise ManifestError(f"spec.strategy.wsdBranches: {err}") from None
    return p


MIN_LAW_BUDGETS, MIN_RUNGS = 2, 3  # a power law through optima; a parabola through each budget


def law_problems(spec: ScalingSweepSpec, p: Plan) -> str | None:
    """Why this plan cannot give a scaling law, in one sentence naming every budget that falls
    short and why; None when at least 2 budgets have 3 or more feasible model sizes."""
    rungs: dict[float, set[str]] = {b: set() for b in spec.budgets}
    for t in p.trials:
        rungs[t.budget].add(t.rung)
    if sum(len(r) >= MIN_RUNGS for r in rungs.values()) >= MIN_LAW_BUDGETS:
        return None
    why: dict[float, list[str]] = {b: [] for b in spec.budgets}
    for i in p.infeasible:
        why[i.budget].append(f"{i.rung}: {i.reason}")
    each = []
    for b in sorted(rungs):
        n = len(rungs[b])
        said = f"{b:g} has {n} feasible model size{'s' if n != 1 else ''}"
        if n < MIN_RUNGS and why[b]:
            said += f" ({'; '.join(why[b][:2])}{'; ...' if len(why[b]) > 2 else ''})"
        each.append(said)
    return (
        f"spec.budgets: a scaling law needs {MIN_LAW_BUDGETS} or more budgets with "
        f"{MIN_RUNGS} or more feasible model sizes each: " + ", ".join(each)
    )
