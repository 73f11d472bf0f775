"""One reconcile of one sweep, as small steps over the engine's decision:

    observe    the trial records (ConfigMaps), the sweep's Jobs (and its pods, in one list, when
               a Job finished or failed) -> every trial's state (a suspended Job: Queued, waiting
               for Kueue); the records of trials seen finished are written at once (keep), so a
               reconcile cut short still moves on
    decide     the engine's decision, held while the data check has not passed
    apply      cancels deleted, launches created (a 409 means the Job exists: a restart)
    refit      when budgets complete: the laws, and the engine asked again
    record     finished trials' records first, then the status patch (only what changed), the
               Jobs of trials failed for good deleted, the operator's metrics

Every decision is the engine's. Each reconcile rebuilds the sweep's state from its records and
its Jobs, so a restart at any point loses nothing and creates no duplicate.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

import kopf
import kubernetes
from kubernetes.client.rest import ApiException

from isoflop import api
from isoflop.cluster import metrics, records, tracking
from isoflop.cluster.clients import Clients, delete_job, list_raw, pods_by_job, server_message
from isoflop.cluster.datajob import data_status
from isoflop.cluster.manifests import (
    DEFAULT_QUEUE_ENV,
    SWEEP_LABEL,
    TRIAL_LABEL,
    cluster_config,
    job_name,
    job_owner,
    records_name,
    stable_root,
    trial_objects,
)
from isoflop.cluster.queue import waiting_reason
from isoflop.cluster.results import ignored_failures, message_of, read_result
from isoflop.sweep import engine
from isoflop.sweep.confirm import is_confirmation, predict, resources_spec
from isoflop.sweep.engine import TrialState, resolve
from isoflop.sweep.plan import Plan
from isoflop.sweep.status import results_table, sweep_status, trial_records
from isoflop.sweep.strategy import graph
from isoflop.sweep.trials import fit, node_config
from isoflop.tracking.experiment import SweepTracking


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Sweep:
    """One sweep being reconciled: what it is, where, and what the last status said."""

    sweep: api.ScalingSweep
    plan: Plan
    uid: str
    namespace: str
    status: dict[str, Any]
    generation: int | None
    body: kopf.Body
    clients: Clients
    records: dict[str, api.TrialRecord] = field(default_factory=dict)  # as stored
    given_up: list[str] = field(default_factory=list)  # Jobs of trials failed for good
    pods: dict[str, list[Any]] | None = None  # the sweep's pods by Job, listed once when needed
    model_check: api.ModelCheckStatus | None = None  # a class family's measures, kept in status
    unschedulable: dict[str, str] = field(default_factory=dict)  # trial: the scheduler's words
    tracking: SweepTracking | None = None  # its MLflow runs (isoflop.cluster.tracking)
    confirmations: list[api.Confirmation] = field(default_factory=list)  # as in the status

    @property
    def spec(self) -> api.ScalingSweepSpec:
        return self.sweep.spec

    @property
    def name(self) -> str:
        return self.sweep.name

    def warn(self, reason: str, message: str) -> None:
        kopf.warn(self.body, reason=reason, message=message)

    def pods_of(self, job: str) -> list[Any]:
        """A Job's pods, from one list of all the sweep's pods per reconcile (made on the first
        need): a restart that finds hundreds of finished Jobs reads them in one request."""
        if self.pods is None:
            self.pods = pods_by_job(self.clients, self.namespace, f"{SWEEP_LABEL}={self.name}")
        return self.pods.get(job, [])  # grouped by Job name, which is this sweep's own


def reconcile_sweep(s: Sweep, patch: kopf.Patch) -> None:
    if s.status.get("phase") not in ("Succeeded", "Failed"):  # an ended sweep logs no more
        s.tracking = tracking.tracking_for(s.uid, s.name, s.namespace, s.spec, s.status, os.environ)
    states = observe(s)
    confirmations = [
        api.Confirmation.model_validate(c) for c in s.status.get("confirmations") or []
    ]
    s.confirmations = confirmations
    states |= confirmation_states(confirmations)
    jobs = sweep_jobs(s)
    data = data_status(s.sweep, s.uid, s.namespace, s.status, jobs, s.plan, s.clients)
    observe_jobs(s, jobs, states)
    keep(s, trial_records(resolve(s.spec, s.plan, states), s.plan, 1 + s.spec.retries.per_trial))
    # the server writes a float such as 1.29746337890625e17 back as the integer of its shortest
    # decimal form, which Python keeps exact: float() gives the budget back
    fitted = tuple(float(b) for b in s.status.get("fittedBudgets") or ())
    previous_fit = s.status.get("fit")
    fit_result = api.FitResult.model_validate(previous_fit) if previous_fit else None

    def decide() -> engine.Decision:
        return engine.decide(s.spec, s.plan, states, fitted, confirmations)

    decision = hold_for_data(decide(), data)
    for cancel in decision.cancels:
        delete_job(s.clients, job_name(s.name, cancel.trial_id), s.namespace)
    for launch in decision.launches:
        states[launch.trial.id] = launch_trial(s, launch)
    analysis = None
    if decision.fit_due:
        fitted = decision.complete_budgets
        fit_result, analysis = fit(
            s.spec,
            results_table(s.plan, states, s.spec),
            fitted,
            final=decision.phase == "Fitting",
        )
        if s.tracking is not None and fit_result is not None:
            s.tracking.log_fit(fit_result, fitted, final=decision.phase == "Fitting")
        message = f"laws fitted on {len(fitted)} budgets"
        kopf.event(s.body, type="Normal", reason="BudgetsFitted", message=message)
        decision = decide()
    if decision.confirm_due:  # stored in this status patch; launched by the next reconcile
        confirmations += predict_confirmations(s, states, fitted, confirmations, analysis)
        decision = replace(decide(), launches=())
    decision = say_why_unscheduled(s, say_why_queued(s, states, decision))
    previous = [api.Condition.model_validate(c) for c in s.status.get("conditions") or []]
    if s.tracking is not None and decision.phase in ("Succeeded", "Failed"):
        wire = fit_result.to_wire() if fit_result is not None else None
        tracking.finish(s.uid, decision.phase, confirmations, wire)
    full = sweep_status(
        s.spec, s.plan, states, decision, fit_result, fitted, s.generation, now(), previous, data,
        confirmations,
    ).model_copy(update={"model_check": s.model_check})  # fmt: skip
    if s.tracking is not None:
        tracked = s.tracking.status()
        full = full.model_copy(update={"tracking": tracked})
        linked = (s.status.get("tracking") or {}).get("experimentUrl")
        if tracked.experiment_url and tracked.experiment_url != linked:  # once: kubectl describe
            message = f"MLflow experiment {tracked.experiment!r}: {tracked.experiment_url}"
            kopf.event(s.body, type="Normal", reason="Tracked", message=message)
    record(s, full, decision, patch)
    metrics.record(
        s.namespace,
        s.name,
        decision.counts,
        fit_result.laws if fit_result else None,
        {tid: st.failed_attempts for tid, st in states.items()},
    )


# -- observe ---------------------------------------------------------------------------------------


def observe(s: Sweep) -> dict[str, TrialState]:
    """The finished trials, from their records (and the status of sweeps from before them)."""
    s.records = records.read(s.clients.core, s.namespace, s.name)
    legacy = s.status.get("trials") or []  # sweeps whose status kept the records themselves
    return states_from_records([*legacy, *(r.to_wire() for r in s.records.values())])


def states_from_records(stored: list[dict[str, Any]]) -> dict[str, TrialState]:
    """Finished trials' records are the operator's memory (its ConfigMaps; the status of sweeps
    from before them): a Succeeded trial keeps its result, a Failed one failed for good."""
    out = {}
    for r in stored:
        if r.get("phase") == "Succeeded" and r.get("loss") is not None:
            out[r["id"]] = TrialState(
                "Succeeded",
                r.get("attempts", 1),
                r["loss"],
                metrics=tuple(sorted((r.get("metrics") or {}).items())),
                source=r.get("source"),
            )
        elif r.get("phase") == "Failed":  # recorded Failed only once it failed for good
            error = r.get("error") or "failed"
            out[r["id"]] = TrialState("Failed", r.get("attempts", 1), error=error, permanent=True)
    return out


def confirmation_states(confirmations: list[api.Confirmation]) -> dict[str, TrialState]:
    """Confirmation runs that finished are in the status (their Jobs go after their TTL)."""
    out = {}
    for c in confirmations:
        if c.phase == "Succeeded" and c.measured_loss is not None:
            metrics = tuple(sorted((c.metrics or {}).items()))
            out[c.trial] = TrialState("Succeeded", c.attempts, c.measured_loss, metrics=metrics)
        elif c.phase == "Failed":
            out[c.trial] = TrialState("Failed", c.attempts, error=c.error, permanent=True)
    return out


def predict_confirmations(
    s: Sweep,
    states: dict[str, TrialState],
    fitted: tuple[float, ...],
    have: list[api.Confirmation],
    analysis: Any,
) -> list[api.Confirmation]:
    """spec.confirm's runs not predicted yet, from the final fit (refitted when it was made by
    an earlier reconcile: the same trials give the same fit)."""
    from isoflop.fit import Points

    rows = results_table(s.plan, states, s.spec)
    if analysis is None:
        _, analysis = fit(s.spec, rows, fitted, final=True)
    points = Points.from_rows([r for r in rows if r["budget"] in fitted])
    done = {c.budget for c in have}
    out = predict(s.spec, analysis, points, sorted(b for b in s.spec.confirm if b not in done))
    for c in out:
        said = (
            c.message
            if c.predicted_loss is None or c.params is None
            else f"{c.params:,} parameters, predicted loss {c.predicted_loss:.4f}"
        )
        message = f"{c.trial}: {said}"
        kopf.event(s.body, type="Normal", reason="ConfirmationPredicted", message=message)
    return out


def sweep_jobs(s: Sweep) -> list[Any]:
    selector = f"{SWEEP_LABEL}={s.name}"
    found = list_raw(s.clients.batch.list_namespaced_job, s.namespace, selector)
    # the label selector may be ignored (test emulators): filter here too
    return [j for j in found if (j.metadata.labels or {}).get(SWEEP_LABEL) == s.name]


def observe_jobs(s: Sweep, jobs: list[Any], states: dict[str, TrialState]) -> None:
    """Every unfinished trial's state from its Job (and its pods, only when some failed)."""
    for job in jobs:
        tid = (job.metadata.labels or {}).get(TRIAL_LABEL)
        if tid is None or (tid in states and states[tid].phase in ("Succeeded", "Failed")):
            continue
        st = job.status or kubernetes.client.V1JobStatus()
        completions = (job.spec.completions if job.spec else None) or 1
        failed = any(c.type == "Failed" and c.status == "True" for c in (st.conditions or []))
        failures = failed_attempts(s, job.metadata.name, st, completions)
        if (st.succeeded or 0) >= completions:
            states[tid] = finished_trial(s, tid, job.metadata.name, 1 + failures)
        elif failed:
            said = message_of(s.pods_of(job.metadata.name)) or {}
            spent = any(c.reason == "BackoffLimitExceeded" for c in st.conditions or [])
            attempts = 1 + s.spec.retries.per_trial if spent else max(failures, 1)
            error = str(said.get("error") or f"the Job failed after {attempts} attempts")
            # failed for good: the Job's own backoff is the retry, and it is spent (or its
            # podFailurePolicy failed it at once)
            states[tid] = TrialState("Failed", attempts, error=error, permanent=True)
            s.warn("TrialFailed", f"{tid}: {error}")
        else:
            suspended = bool(job.spec and job.spec.suspend)
            states[tid] = running_trial(s, tid, job.metadata.name, st, 1 + failures, suspended)


def failed_attempts(s: Sweep, job: str, st: Any, ranks: int) -> int:
    """The failed attempts of a trial's Job, each counted once: its failed pods, less those its
    podFailurePolicy ignores (preempted, disrupted), and a multi-node trial's ranks of one
    attempt fail together (one rank lost ends the others' rendezvous), so its failed pods are
    divided among its ranks, rounded up. The pods counted are those still there: the Job's
    `failed` counts ignored pods too, and one deleted (a drained node's, a user's kubectl
    delete) can no longer say whether it was. Listed only when the Job counts a failure."""
    if not st.failed:
        return 0
    pods = s.pods_of(job)
    failed = sum(1 for p in pods if p.status is not None and p.status.phase == "Failed")
    counted: int = max(min(int(st.failed), failed) - ignored_failures(pods), 0)
    return math.ceil(counted / max(ranks, 1))


def finished_trial(s: Sweep, tid: str, job: str, attempts: int = 1) -> TrialState:
    """A Job that completed, after `attempts` (its failed ones and the one that succeeded)."""
    result = read_result(lambda: s.pods_of(job), s.spec, s.name, s.namespace, tid)
    if result is None:
        return TrialState("Running", attempts)  # finished, result not readable yet
    if s.tracking is not None:  # what its tracker could not log, said in its message
        tracking.dropped(s.tracking, tid, message_of(s.pods_of(job)))
    loss, source, note, measured = result
    if loss is None:
        s.warn("TrialFailed", f"{tid}: {note}")
        return TrialState("Failed", 1 + s.spec.retries.per_trial, error=note)
    return TrialState("Succeeded", attempts).finish(loss, measured, source)


def running_trial(
    s: Sweep, tid: str, job: str, st: Any, attempts: int = 1, suspended: bool = False
) -> TrialState:
    """A Job still at work, on its `attempts`-th attempt (failed_attempts: its failures so far,
    retried by the Job's backoff). A suspended Job waits in its queue: not admitted yet, or
    evicted by Kueue (its pods deleted, checkpoint kept), which is no failure; the operator
    never unsuspends it."""
    said = (message_of(s.pods_of(job)) or {}) if st.failed else {}
    if said.get("permanent") is True:
        # the trainer says no retry can mend it, and the Job's exit-code rule did not see it (a
        # pod that exited 1: an image whose launcher is plain torchrun): fail once, stop the Job
        error = str(said.get("error") or "failed")
        s.warn("TrialFailed", f"{tid}: {error}")
        s.given_up.append(job)
        return TrialState("Failed", attempts, error=error, permanent=True)
    if suspended:
        return TrialState("Queued", attempts)
    if not st.active:
        return TrialState("Starting", attempts)
    # the Job's `active` counts pods that wait too: a trial runs once a pod of it does
    live = [p for p in s.pods_of(job) if p.status and p.status.phase in ("Pending", "Running")]
    if live and all(p.status.phase == "Pending" for p in live):
        why = next(filter(None, (unschedulable(p) for p in live)), None)
        if why is not None:
            s.unschedulable[tid] = why
        return TrialState("Starting", attempts)
    return TrialState("Running", attempts)


def unschedulable(pod: Any) -> str | None:
    """The scheduler's sentence for a pod it cannot place (PodScheduled False, Unschedulable)."""
    for c in pod.status.conditions or []:
        if c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable":
            return str(c.message or "the scheduler finds no node for it")
    return None


def say_why_unscheduled(s: Sweep, decision: engine.Decision) -> engine.Decision:
    """Trials whose pods no node can take say so in the sweep's message, in the scheduler's
    words, and once in an event per trial (when the message did not say it yet)."""
    if not s.unschedulable or decision.phase not in ("Pending", "Running", "Confirming"):
        return decision
    conditions: list[dict[str, Any]] = s.status.get("conditions") or []
    ready = next((c for c in conditions if c.get("type") == "Ready"), {})
    for tid, why in s.unschedulable.items():
        if tid not in (ready.get("message") or ""):
            s.warn("TrialUnschedulable", f"{tid}: {why}")
    first, why = next(iter(s.unschedulable.items()))
    n = len(s.unschedulable)
    said = f"{n} trial{'s' if n > 1 else ''} cannot be scheduled ({first}: {why})"
    return replace(decision, message=f"{decision.message}; {said}")


def say_why_queued(
    s: Sweep, states: dict[str, TrialState], decision: engine.Decision
) -> engine.Decision:
    """While trials wait in Kueue's queue, the message says why, in Kueue's words."""
    queued = [job_name(s.name, tid) for tid, st in states.items() if st.phase == "Queued"]
    if not queued or decision.phase not in ("Pending", "Running", "Confirming"):
        return decision
    said = waiting_reason(s.clients, s.namespace, queued)
    return replace(decision, message=f"{decision.message} (Kueue: {said})") if said else decision


# -- decide and apply ------------------------------------------------------------------------------


def hold_for_data(decision: engine.Decision, data: api.DataStatus | None) -> engine.Decision:
    """No trial starts before its data is known to be there and to fit."""
    if data is None or data.ready is True:
        return decision
    return replace(
        decision,
        launches=(),
        fit_due=False,
        confirm_due=False,
        phase="Failed" if data.ready is False else "Pending",
        reason="InvalidData" if data.ready is False else "CheckingData",
        message=data.message,
    )


def launch_trial(s: Sweep, launch: engine.Launch) -> TrialState:
    """Create a trial's Job (and the headless Service of a multi-node trial, owned by the Job).
    An object that exists already is this trial's (a restart, another replica); one the API
    server refuses as it is fails the trial for good, with the server's sentence."""
    t = launch.trial
    sweep = s.sweep
    if is_confirmation(t.id):  # resources of its own, never packed
        sweep = sweep.model_copy(update={"spec": resources_spec(s.spec)})
    scraped = bool(s.spec.metrics.prometheus_url or os.environ.get("ISOFLOP_PROMETHEUS_URL"))
    paths = cluster_config(sweep, t, scraped)
    tracked = tracking.trial_fields(s.tracking, t.id, t.budget, s.confirmations)
    cfg = node_config(sweep.spec, s.name, launch.node, stable_root(sweep), **paths, **tracked)
    job_uid = ""
    queue = os.environ.get(DEFAULT_QUEUE_ENV)
    for obj in trial_objects(sweep, s.uid, s.namespace, t, cfg, queue):
        name = obj["metadata"]["name"]
        try:
            if obj["kind"] == "Job":
                created = s.clients.batch.create_namespaced_job(s.namespace, obj)
                job_uid = created.metadata.uid or ""
            else:
                obj["metadata"]["ownerReferences"] = [job_owner(name, job_uid)]
                s.clients.core.create_namespaced_service(s.namespace, obj)
        except ApiException as err:
            if err.status == 409:  # it exists already (a restart, another replica)
                if obj["kind"] == "Job":
                    found = s.clients.batch.read_namespaced_job(name, s.namespace)
                    job_uid = found.metadata.uid or ""
                continue
            if err.status not in (400, 422):  # 400, 422: refused as it is; retries cannot help
                raise
            refused = f"the API server refused its {obj['kind']}: {server_message(err)}"
            s.warn("TrialRejected", f"{t.id}: {refused}")
            return TrialState("Failed", launch.attempt, error=refused, permanent=True)
    return TrialState("Starting", launch.attempt)


# -- record ----------------------------------------------------------------------------------------


def keep(s: Sweep, trials: list[api.TrialRecord]) -> None:
    """Write the records of finished trials not stored yet (or stored otherwise) to their budgets'
    ConfigMaps. Made as soon as the Jobs are read, before anything slow (a fit, launches, the
    status): an operator killed in the middle of a reconcile keeps what it read, so every
    restart that gets as far as reading the Jobs moves the sweep forward."""
    finished = [
        r for r in trials if r.phase in ("Succeeded", "Failed") and s.records.get(r.id) != r
    ]
    if not finished:
        return
    nodes = graph(s.spec, s.plan.trials, s.plan.tuning).nodes
    budgets = {n.id: n.trial.budget for n in nodes}  # segments and tuning trials too
    records.write(s.clients.core, s.sweep, s.uid, s.namespace, budgets, finished)
    s.records |= {r.id: r for r in finished}


def record(
    s: Sweep, full: api.ScalingSweepStatus, decision: engine.Decision, patch: kopf.Patch
) -> None:
    """Each newly finished trial's record goes to its budget's ConfigMap before the status that
    counts it (the status keeps per-budget summaries only, whatever the sweep's size); then the
    status, patched where it changed."""
    keep(s, full.trials)
    for name in s.given_up:  # once their failure is recorded: a crash before this retries once more
        delete_job(s.clients, name, s.namespace)
    new = full.to_wire()
    del new["trials"]
    for summary in new["budgets"]:
        summary["records"] = records_name(s.name, summary["budget"])
    if s.status.get("trials"):
        patch.status["trials"] = None  # moved to the ConfigMaps
    if decision.phase in ("Succeeded", "Failed") and s.status.get("phase") != decision.phase:
        kopf.event(s.body, type="Normal", reason=f"Sweep{decision.phase}", message=decision.message)
    for key, value in new.items():
        if not same(s.status.get(key), value):  # patch only what changed: no churn when quiet
            patch.status[key] = value


def same(stored: Any, wanted: Any) -> bool:
    """Whether the server holds what we would write. Numbers compare as floats: a float that the
    server wrote back as an integer (beyond 2^53, as the shortest decimal) is the same float."""
    number = (int, float)
    if isinstance(stored, number) and isinstance(wanted, number):
        if isinstance(stored, bool) or isinstance(wanted, bool):
            return stored is wanted
        return float(stored) == float(wanted)
    if isinstance(stored, dict) and isinstance(wanted, dict):
        return stored.keys() == wanted.keys() and all(same(stored[k], wanted[k]) for k in wanted)
    if isinstance(stored, list) and isinstance(wanted, list):
        return len(stored) == len(wanted) and all(map(same, stored, wanted))
    return bool(stored == wanted)
