"""The ScalingSweep operator: kopf glue around the engine.

    kopf run -m isoflop.cluster.handlers --all-namespaces

Environment:
  ISOFLOP_PEERING=NAME       several replicas (kopf peering): the one with the highest
                             ISOFLOP_PEERING_PRIORITY (random unless set) works, the others stand by
  ISOFLOP_METRICS_PORT=8080  serve the operator's own Prometheus metrics (on
                             ISOFLOP_METRICS_ADDRESS, all interfaces unless set)
  ISOFLOP_PROMETHEUS_URL     Prometheus for sweeps that name no spec.metrics.prometheusUrl
  ISOFLOP_RECONCILE_SECONDS  seconds between reconciles of a sweep
  ISOFLOP_WEBHOOK_PORT=9443  serve the validating admission webhook (isoflop.cluster.admission) over
                             HTTPS on ISOFLOP_WEBHOOK_ADDRESS (all interfaces unless set) with
                             ISOFLOP_WEBHOOK_CERT and ISOFLOP_WEBHOOK_KEY (PEM files, re-read
                             when they change); the chart registers it with the API server

Every decision is the engine's. Each reconcile rebuilds the sweep's state from its status (where
finished results live) and its child Jobs, so a restart at any point loses nothing and creates no
duplicate (a 409 on create means the Job exists).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

import kopf
import kubernetes
from kubernetes.client.rest import ApiException
from prometheus_client import start_http_server
from pydantic import ValidationError

from isoflop import api
from isoflop.cluster import admission, metrics, policy, records
from isoflop.cluster.manifests import (
    DATA_CHECK,
    PREEMPTED_EXIT_CODE,
    ROLE_LABEL,
    SWEEP_LABEL,
    TRIAL_LABEL,
    cluster_config,
    data_check_job,
    job_name,
    job_owner,
    records_name,
    stable_root,
    trial_objects,
)
from isoflop.cluster.metrics import ERRORS, LATENCY, forget
from isoflop.sweep import engine
from isoflop.sweep.check import runnable_plan
from isoflop.sweep.datacheck import epochs
from isoflop.sweep.engine import TrialState
from isoflop.sweep.plan import Plan
from isoflop.sweep.strategy import graph
from isoflop.sweep.trials import fit, node_config
from isoflop_trainer.data.store import is_shards

IMMUTABLE = (("model", "family"), ("data",), ("flopsAccounting",))


RECONCILE_SECONDS = float(os.environ.get("ISOFLOP_RECONCILE_SECONDS", "10"))
WEBHOOK_PORT = os.environ.get("ISOFLOP_WEBHOOK_PORT")


@dataclass
class Clients:
    batch: Any
    core: Any
    authorization: Any = None


def make_clients() -> Clients:
    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        # the kubernetes package snapshots $KUBECONFIG at import: pass the path explicitly
        kubernetes.config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
    client = kubernetes.client.ApiClient()
    return Clients(
        kubernetes.client.BatchV1Api(client),
        kubernetes.client.CoreV1Api(client),
        kubernetes.client.AuthorizationV1Api(client),
    )


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # handler logs become events from WARNING up; the explicit kopf.event calls always do
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 60
    settings.peering.standalone = not os.environ.get("ISOFLOP_PEERING")
    if os.environ.get("ISOFLOP_PEERING"):
        settings.peering.name = os.environ["ISOFLOP_PEERING"]
        # kopf freezes every replica when two share a priority: distinct ones make one active
        settings.peering.priority = int(
            os.environ.get("ISOFLOP_PEERING_PRIORITY") or random.randrange(1, 2**31)
        )
    memo.clients = make_clients()
    memo.policy = policy.Policy.from_env()
    if WEBHOOK_PORT:
        settings.admission.server = kopf.WebhookServer(
            addr=os.environ.get("ISOFLOP_WEBHOOK_ADDRESS", "0.0.0.0"),
            port=int(WEBHOOK_PORT),
            certfile=os.environ["ISOFLOP_WEBHOOK_CERT"],
            pkeyfile=os.environ["ISOFLOP_WEBHOOK_KEY"],
        )
    port = os.environ.get("ISOFLOP_METRICS_PORT")
    if port:  # the operator's own metrics (trials by phase, exponents, errors, latency)
        address = os.environ.get("ISOFLOP_METRICS_ADDRESS", "0.0.0.0")
        server, _thread = start_http_server(int(port), addr=address)
        memo.metrics_server = server


@kopf.on.cleanup()
def stop_metrics(memo: kopf.Memo, **_: Any) -> None:
    server = getattr(memo, "metrics_server", None)
    if server is not None:
        server.shutdown()
        server.server_close()


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def invalid(patch: kopf.Patch, message: str) -> kopf.PermanentError:
    """Mark the sweep Failed with an Invalid condition; the caller raises the returned error."""
    patch.status["phase"] = "Failed"
    patch.status["conditions"] = [
        {
            "type": "Ready",
            "status": "False",
            "reason": "InvalidSpec",
            "message": message,
            "lastTransitionTime": now(),
        },
        {
            "type": "Failed",
            "status": "True",
            "reason": "InvalidSpec",
            "message": message,
            "lastTransitionTime": now(),
        },
    ]
    return kopf.PermanentError(message)


def _get(obj: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        obj = obj.get(key) if isinstance(obj, dict) else None
    return obj


@kopf.on.create(api.GROUP, api.VERSION, api.PLURAL)
@kopf.on.resume(api.GROUP, api.VERSION, api.PLURAL)
def admit(name: str, spec: kopf.Spec, patch: kopf.Patch, memo: Any, **_: Any) -> None:
    """Validate the name and the spec; an invalid one ends here, with a condition naming the field
    (and nothing created)."""
    try:
        admissible(name, spec, memo)
    except api.ManifestError as err:
        raise invalid(patch, str(err)) from None


def admissible(name: str, spec: Any, memo: Any) -> tuple[api.ScalingSweepSpec, Plan]:
    """The spec and plan of a sweep the operator may run: a usable name, a valid spec that can be
    planned, and nothing the installation's policy forbids; else a ManifestError's sentence."""
    api.parse_name(name)
    parsed = api.parse_spec(dict(spec))
    p = runnable_plan(parsed)
    if parsed.strategy.wsd_branches is not None and not parsed.storage.checkpoints:
        raise api.ManifestError(
            "spec.strategy.wsdBranches needs spec.storage.checkpoints on a cluster: each branch "
            "starts from a checkpoint its stable run's pod wrote there"
        )
    packing = parsed.resources.packing
    if packing is not None and packing.shared_gpu_resource is None:
        raise api.ManifestError(
            "spec.resources.packing needs sharedGpuResource and replicasPerGpu on a cluster: "
            "packed trials request the resource a GPU-sharing device plugin (NVIDIA time-slicing "
            "or MPS) advertises, e.g. nvidia.com/gpu.shared, in place of whole GPUs"
        )
    refused = policy.check(parsed, getattr(memo, "policy", None) or policy.Policy())
    if refused is not None:
        raise api.ManifestError(refused)
    return parsed, p


def can(clients: Clients, userinfo: Any, namespace: str, access: admission.Access) -> bool:
    """The API server's answer (a SubjectAccessReview) to whether the user may do this."""
    review = kubernetes.client.V1SubjectAccessReview(
        spec=kubernetes.client.V1SubjectAccessReviewSpec(
            user=userinfo.get("username"),
            groups=userinfo.get("groups"),
            uid=userinfo.get("uid"),
            extra=userinfo.get("extra"),
            resource_attributes=kubernetes.client.V1ResourceAttributes(
                namespace=namespace,
                verb=access.verb,
                group=access.group,
                resource=access.resource,
                name=access.name,
            ),
        )
    )
    answer = clients.authorization.create_subject_access_review(review)
    return bool(answer.status and answer.status.allowed)


def validate(
    *,
    name: str,
    namespace: str | None,
    spec: kopf.Spec,
    userinfo: kopf.UserInfo,
    memo: Any,
    old: Any = None,
    new: Any = None,
    operation: str | None = None,
    **_: Any,
) -> None:
    """The admission webhook: refuse, before it is stored, a sweep the operator would refuse
    (InvalidSpec's sentence) or one that asks for more than its sender may do."""
    if not admission.spec_changed(operation, old, new or {}):
        return  # metadata only (kopf's annotations, a label): nothing new can run
    try:
        parsed = admissible(name, spec, memo)[0]
    except api.ManifestError as err:
        raise kopf.AdmissionError(str(err), code=422) from None
    if not namespace:  # the API server fills it in; never guess where rights are checked
        raise kopf.AdmissionError("the sweep names no namespace", code=400)
    user = userinfo.get("username") or "the requesting user"
    refused = admission.refusal(
        user, namespace, parsed, lambda a: can(memo.clients, userinfo, namespace, a)
    )
    if refused is not None:
        raise kopf.AdmissionError(refused, code=403)


if WEBHOOK_PORT:  # kopf refuses to start with admission handlers and no server to serve them
    kopf.on.validate(
        api.GROUP,
        api.VERSION,
        api.PLURAL,
        id=admission.WEBHOOK_ID,
        operations=["CREATE", "UPDATE"],
        side_effects=False,
    )(validate)


def identity(spec: api.ScalingSweepSpec) -> dict[str, str]:
    """A digest of each field that defines a sweep (defaults filled in)."""
    wire = spec.to_wire()
    return {
        ".".join(path): hashlib.sha256(
            json.dumps(_get(wire, path), sort_keys=True).encode()
        ).hexdigest()[:16]
        for path in IMMUTABLE
    }


def changed_identity(spec: api.ScalingSweepSpec, status: Any) -> str | None:
    """The sentence refusing a spec whose defining fields differ from the admitted ones; None
    when they match (or nothing was admitted yet)."""
    admitted = (status or {}).get("admitted")
    if not isinstance(admitted, dict):
        return None
    for path, digest in identity(spec).items():
        if admitted.get(path) not in (None, digest):
            return f"spec.{path} is immutable; restore it, or create a new sweep instead"
    return None


@kopf.on.update(api.GROUP, api.VERSION, api.PLURAL, field="spec")
def update(
    name: str, old: Any, new: Any, status: Any, patch: kopf.Patch, memo: Any, **_: Any
) -> None:
    """Refuse changes to what defines a sweep; anything else is picked up by the next reconcile."""
    for path in IMMUTABLE:
        if _get(old, path) != _get(new, path) and not (status or {}).get("admitted"):
            raise invalid(patch, f"spec.{'.'.join(path)} is immutable; create a new sweep instead")
    try:
        refused = changed_identity(api.parse_spec(dict(new)), status)
    except api.ManifestError:
        refused = None
    if refused is not None:
        raise invalid(patch, refused)
    try:
        admissible(name, new, memo)
    except api.ManifestError as err:
        raise invalid(patch, str(err)) from None


@kopf.on.delete(api.GROUP, api.VERSION, api.PLURAL, optional=True)
def delete(name: str, namespace: str | None, **_: Any) -> None:
    """Children go with their owner (ownerReferences); forget the sweep's metrics."""
    forget(namespace or "", name)


@kopf.timer(api.GROUP, api.VERSION, api.PLURAL, interval=RECONCILE_SECONDS, initial_delay=0.5)
def reconcile(
    name: str,
    namespace: str | None,
    uid: str,
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    body: kopf.Body,
    patch: kopf.Patch,
    memo: Any,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    **_: Any,
) -> None:
    """Observe the children, ask the engine, apply its decision, record the status."""
    start = time.monotonic()
    namespace = namespace or "default"
    try:
        parsed, p = admissible(name, spec, memo)
        sweep = api.ScalingSweep(
            metadata=api.ObjectMeta(name=name, namespace=namespace), spec=parsed
        )
    except (api.ManifestError, ValidationError):
        return  # admit() has recorded why
    refused = changed_identity(sweep.spec, status)
    if refused is not None:  # a defining field changed: act on nothing until it is restored
        said = [c.get("message") for c in status.get("conditions") or []]
        if refused not in said:
            invalid(patch, refused)
        return
    if not status.get("admitted"):  # first sight of a valid spec: what defines the sweep
        patch.status["admitted"] = identity(sweep.spec)
    try:
        _reconcile(
            sweep,
            p,
            uid,
            namespace,
            dict(status),
            meta.get("generation"),
            body,
            patch,
            memo.clients,
            logger,
        )
    except ApiException as err:
        # refused for now (a quota, a missing right, a server under load): the sweep says so, with
        # the server's own words, and the reconcile retries; the next good one clears it
        ERRORS.labels(namespace, name).inc()
        message = f"the API server answered {err.status}: {server_message(err)}"
        kept = [c for c in status.get("conditions") or [] if c.get("type") != "APIError"]
        patch.status["conditions"] = [
            *kept,
            {
                "type": "APIError",
                "status": "True",
                "reason": str(err.reason or err.status).replace(" ", ""),
                "message": message,
                "lastTransitionTime": now(),
            },
        ]
        raise kopf.TemporaryError(message, delay=15) from err
    finally:
        LATENCY.observe(time.monotonic() - start)


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


def states_from_records(records: Iterable[dict[str, Any]]) -> dict[str, TrialState]:
    """Finished trials' records are the operator's memory (its ConfigMaps; the status of sweeps
    from before them): a Succeeded trial keeps its result, a Failed one failed for good."""
    out = {}
    for r in records:
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


def _reconcile(
    sweep: api.ScalingSweep,
    p: Plan,
    uid: str,
    namespace: str,
    status: dict[str, Any],
    generation: int | None,
    body: kopf.Body,
    patch: kopf.Patch,
    clients: Clients,
    logger: logging.Logger | logging.LoggerAdapter[Any],
) -> None:
    spec = sweep.spec
    limit = 1 + spec.retries.per_trial
    stored = records.read(clients.core, namespace, sweep.name)
    legacy = status.get("trials") or []  # sweeps whose status kept the records themselves
    states = states_from_records([*legacy, *(r.to_wire() for r in stored.values())])
    jobs = [
        j
        for j in clients.batch.list_namespaced_job(
            namespace, label_selector=f"{SWEEP_LABEL}={sweep.name}"
        ).items
        # the label selector may be ignored (test emulators): filter here too
        if (j.metadata.labels or {}).get(SWEEP_LABEL) == sweep.name
    ]
    data = data_status(sweep, uid, namespace, status, jobs, p, clients)
    given_up: list[str] = []  # Jobs of trials failed for good, still retrying: deleted below
    for job in jobs:
        tid = (job.metadata.labels or {}).get(TRIAL_LABEL)
        if tid is None or (tid in states and states[tid].phase in ("Succeeded", "Failed")):
            continue
        st = job.status or kubernetes.client.V1JobStatus()
        completions = (job.spec.completions if job.spec else None) or 1
        failed = any(c.type == "Failed" and c.status == "True" for c in (st.conditions or []))
        if (st.succeeded or 0) >= completions:
            result = read_result(clients, spec, sweep.name, namespace, tid, job.metadata.name)
            if result is None:
                states[tid] = TrialState("Running", 1)  # finished, result not readable yet
            elif result[0] is None:
                states[tid] = TrialState("Failed", limit, error=result[2])
                kopf.warn(body, reason="TrialFailed", message=f"{tid}: {result[2]}")
            else:
                states[tid] = TrialState("Succeeded", 1).finish(result[0], result[3], result[1])
        elif failed:
            said = termination_message(clients, namespace, job.metadata.name) or {}
            error = str(said.get("error") or f"the Job failed after {limit} attempts")
            states[tid] = TrialState("Failed", limit, error=error)
            kopf.warn(body, reason="TrialFailed", message=f"{tid}: {error}")
        else:
            # pods that failed so far, retried by the Job's backoff; the Job's `failed` counts
            # preempted and disrupted pods too, which its podFailurePolicy ignores: so do we
            attempts, said = 1, {}
            if st.failed:
                pods = job_pods(clients, namespace, job.metadata.name)
                attempts += max(st.failed - ignored_failures(pods), 0)
                said = message_of(pods) or {}
            if said.get("permanent") is True:
                # the trainer says no retry can mend it, and the Job's exit-code rule did not
                # see it (a pod that exited 1: an image whose launcher is plain torchrun): fail
                # once, stop the Job
                error = str(said.get("error") or "failed")
                states[tid] = TrialState("Failed", attempts, error=error, permanent=True)
                kopf.warn(body, reason="TrialFailed", message=f"{tid}: {error}")
                given_up.append(job.metadata.name)
                continue
            states[tid] = TrialState("Running" if st.active else "Starting", attempts)
    # the server writes a float such as 1.29746337890625e17 back as the integer of its shortest
    # decimal form, which Python keeps exact: float() gives the budget back
    fitted = tuple(float(b) for b in status.get("fittedBudgets") or ())
    previous_fit = status.get("fit")
    fit_result = api.FitResult.model_validate(previous_fit) if previous_fit else None
    decision = engine.decide(spec, p, states, fitted)
    if data is not None and data.ready is not True:  # no trial starts before its data is known
        decision = replace(
            decision,
            launches=(),
            fit_due=False,
            phase="Failed" if data.ready is False else "Pending",
            reason="InvalidData" if data.ready is False else "CheckingData",
            message=data.message,
        )
    for cancel in decision.cancels:
        delete_job(clients, job_name(sweep.name, cancel.trial_id), namespace)
    scraped = bool(spec.metrics.prometheus_url or os.environ.get("ISOFLOP_PROMETHEUS_URL"))
    for launch in decision.launches:
        t = launch.trial
        cfg = node_config(
            spec, sweep.name, launch.node, stable_root(sweep), **cluster_config(sweep, t, scraped)
        )
        refused = None
        job_uid = ""
        for obj in trial_objects(sweep, uid, namespace, t, cfg):
            name = obj["metadata"]["name"]
            try:
                if obj["kind"] == "Job":
                    created = clients.batch.create_namespaced_job(namespace, obj)
                    job_uid = created.metadata.uid or ""
                else:
                    obj["metadata"]["ownerReferences"] = [job_owner(name, job_uid)]
                    clients.core.create_namespaced_service(namespace, obj)
            except ApiException as err:
                if err.status == 409:  # it exists already (a restart, another replica)
                    if obj["kind"] == "Job":
                        found = clients.batch.read_namespaced_job(name, namespace)
                        job_uid = found.metadata.uid or ""
                    continue
                if err.status not in (400, 422):  # 400, 422: refused as it is; retries cannot help
                    raise
                refused = f"the API server refused its {obj['kind']}: {server_message(err)}"
                break
        if refused is not None:
            states[t.id] = TrialState("Failed", launch.attempt, error=refused, permanent=True)
            kopf.warn(body, reason="TrialRejected", message=f"{t.id}: {refused}")
            continue
        states[t.id] = TrialState("Starting", launch.attempt)
    if decision.fit_due:
        fit_result, _ = fit(
            spec,
            engine.results_table(p, states),
            decision.complete_budgets,
            final=decision.phase == "Fitting",
        )
        fitted = decision.complete_budgets
        kopf.event(
            body,
            type="Normal",
            reason="BudgetsFitted",
            message=f"laws fitted on {len(fitted)} budgets",
        )
        decision = engine.decide(spec, p, states, fitted)
    previous = [api.Condition.model_validate(c) for c in status.get("conditions") or []]
    full = engine.status(
        spec, p, states, decision, fit_result, fitted, generation, now(), previous, data
    )
    # each newly finished trial's record goes to its budget's ConfigMap, before the status
    # that counts it: the status keeps per-budget summaries only, whatever the sweep's size
    finished = [
        r for r in full.trials if r.phase in ("Succeeded", "Failed") and stored.get(r.id) != r
    ]
    budgets = {n.id: n.trial.budget for n in graph(spec, p.trials).nodes}  # segments too
    records.write(clients.core, sweep, uid, namespace, budgets, finished)
    for name in given_up:  # once their failure is recorded: a crash before this retries once more
        delete_job(clients, name, namespace)
    new = full.to_wire()
    del new["trials"]
    for summary in new["budgets"]:
        summary["records"] = records_name(sweep.name, summary["budget"])
    if legacy:
        patch.status["trials"] = None  # moved to the ConfigMaps
    if decision.phase in ("Succeeded", "Failed") and status.get("phase") != decision.phase:
        kopf.event(body, type="Normal", reason=f"Sweep{decision.phase}", message=decision.message)
    for key, value in new.items():
        if not same(status.get(key), value):  # patch only what changed: no churn when quiet
            patch.status[key] = value
    metrics.record(
        namespace,
        sweep.name,
        decision.counts,
        fit_result.laws if fit_result else None,
        {tid: s.failed_attempts for tid, s in states.items()},
    )


def delete_job(clients: Clients, name: str, namespace: str) -> None:
    """Delete a Job, and through owner references its pods and Service; gone already is fine."""
    try:
        clients.batch.delete_namespaced_job(name, namespace, propagation_policy="Background")
    except ApiException as err:
        if err.status != 404:
            raise


def data_status(
    sweep: api.ScalingSweep,
    uid: str,
    namespace: str,
    status: dict[str, Any],
    jobs: list[Any],
    p: Plan,
    clients: Clients,
) -> api.DataStatus | None:
    """Whether the sweep's shards exist and fit it, as a Job with the sweep's own credentials
    found them; None for procedural data. `data` is immutable, so one check holds for good."""
    spec = sweep.spec
    if not is_shards(spec.data.source):
        return None
    before = status.get("data")
    if isinstance(before, dict) and before.get("ready") is not None:
        return api.DataStatus.model_validate(before)
    check = next((j for j in jobs if (j.metadata.labels or {}).get(ROLE_LABEL) == DATA_CHECK), None)
    checking = api.DataStatus(message=f"checking {spec.data.source} before any trial starts")
    if check is None:
        try:
            clients.batch.create_namespaced_job(namespace, data_check_job(sweep, uid, namespace))
        except ApiException as err:
            if err.status != 409:
                raise
        return checking
    st = check.status or kubernetes.client.V1JobStatus()
    failed = any(c.type == "Failed" and c.status == "True" for c in (st.conditions or []))
    if not (st.succeeded or failed):
        return checking
    said = termination_message(clients, namespace, check.metadata.name) or {}
    if failed:
        error = said.get("error") or "the data check Job failed without a message"
        return api.DataStatus(ready=False, message=str(error)[:1000])
    samples, val = said.get("samples"), said.get("validation_samples")
    if not isinstance(samples, int) or samples < 1:
        return checking  # the pod's message is not readable yet
    each = epochs(p, samples)
    span = [min(each.values()), max(each.values())] if each else None
    message = f"{samples} training samples"
    if span is not None:
        message += f"; a planned trial makes {span[0]:.3g} to {span[1]:.3g} epochs over them"
    return api.DataStatus(
        ready=True,
        samples=samples,
        validation_samples=val if isinstance(val, int) else None,
        epochs=span,
        message=message,
    )


# ------------------------------------------------------------------------------------------------
# results


RESULT_METRICS = ("fid", "bpd", "loss_se")  # beside the loss: what the fit turns into laws


def read_result(
    clients: Clients, spec: api.ScalingSweepSpec, sweep: str, namespace: str, trial: str, job: str
) -> tuple[float | None, api.ResultSource, str, dict[str, float]] | None:
    """(loss, source, note, metrics) of a finished trial; loss None means a failed trial (NaN);
    None means not readable yet (try again on the next reconcile). Metrics are the FID,
    bits/dim and the loss's standard error where the trial measured them."""
    loss: float | None = None
    metrics: dict[str, float] = {}
    source: api.ResultSource = "prometheus"
    prometheus = spec.metrics.prometheus_url or os.environ.get("ISOFLOP_PROMETHEUS_URL")
    if prometheus:
        loss = query_prometheus(prometheus, spec.metrics, namespace, sweep, trial)
        if loss is not None:
            asked = {
                "fid": bool(spec.evaluation.fid.samples),
                "bpd": bool(spec.evaluation.likelihood.samples),
                "loss_se": True,
            }
            for name in (m for m in RESULT_METRICS if asked[m]):
                value = query_prometheus(
                    prometheus, spec.metrics, namespace, sweep, trial, f"eval_{name}"
                )
                if value is not None and math.isfinite(value):
                    metrics[name] = value
    if loss is None:
        source = "termination-message"
        message = termination_message(clients, namespace, job)
        if message is None:
            return None
        value = message.get("eval_loss")
        if message.get("status") != "succeeded":
            return (
                None,
                source,
                f"the trainer reported {message.get('status')}: {message.get('error')}",
                {},
            )
        loss = float(value) if isinstance(value, int | float) else math.nan
        metrics = {
            name: float(v)
            for name in RESULT_METRICS
            if isinstance(v := message.get(f"eval_{name}"), int | float) and math.isfinite(v)
        }
    if not math.isfinite(loss):
        return None, source, f"the final validation loss is {loss}, not a number to fit", {}
    return loss, source, "", metrics


def result_query(
    namespace: str, sweep: str, trial: str, lookback: str, metric: str = "eval_loss"
) -> str:
    """PromQL for a trial's final value of a metric. `namespace` is the label every Kubernetes
    scrape (the chart's PodMonitor included) attaches: sweeps of the same name in two namespaces
    differ."""
    selector = f'namespace="{namespace}",sweep="{sweep}",trial="{trial}"'
    return f"last_over_time(isoflop_{metric}{{{selector}}}[{lookback}])"


def query_prometheus(
    base_url: str,
    metrics: api.MetricsSpec,
    namespace: str,
    sweep: str,
    trial: str,
    metric: str = "eval_loss",
) -> float | None:
    """The trial's last isoflop_<metric> through the HTTP API; None if absent or unreachable."""
    query = result_query(namespace, sweep, trial, metrics.lookback, metric)
    url = f"{base_url.rstrip('/')}/api/v1/query?{urllib.parse.urlencode({'query': query})}"
    try:
        with urllib.request.urlopen(url, timeout=metrics.query_timeout_seconds) as resp:
            data = json.load(resp)
    except (OSError, ValueError):
        return None  # down or slow: the termination message, or the next reconcile, has it
    results = data.get("data", {}).get("result", []) if data.get("status") == "success" else []
    if not results:
        return None
    return float(results[0]["value"][1])


def server_message(err: ApiException) -> str:
    """The API server's own explanation of a refusal (its Status object's message)."""
    try:
        body = json.loads(err.body or "")
    except (TypeError, ValueError):
        body = None
    message = body.get("message") if isinstance(body, dict) else None
    return str(message or err.reason or f"HTTP {err.status}")[:1000]


def job_pods(clients: Clients, namespace: str, job: str) -> list[Any]:
    """The pods of one Job (the label selector may be ignored by test emulators: filtered)."""
    pods = clients.core.list_namespaced_pod(namespace, label_selector=f"job-name={job}").items
    return [p for p in pods if (p.metadata.labels or {}).get("job-name") == job]


def ignored_failures(pods: list[Any]) -> int:
    """Failed pods the Job's podFailurePolicy ignores, which its status.failed counts all the
    same: a trainer that checkpointed on SIGTERM and exited PREEMPTED_EXIT_CODE, or a pod with a
    DisruptionTarget condition (preempted, evicted, its node drained)."""
    count = 0
    for pod in pods:
        status = pod.status
        if status is None:
            continue
        disrupted = any(
            c.type == "DisruptionTarget" and c.status == "True" for c in status.conditions or []
        )
        preempted = any(
            cs.name == "trainer"
            and cs.state is not None
            and cs.state.terminated is not None
            and cs.state.terminated.exit_code == PREEMPTED_EXIT_CODE
            for cs in status.container_statuses or []
        )
        count += status.phase == "Failed" and (disrupted or preempted)
    return count


def termination_message(clients: Clients, namespace: str, job: str) -> dict[str, Any] | None:
    """The trainer's result from the termination message of the Job's pod that succeeded, or
    else of its last pod to end. A Job retries pods (a preempted one, a failed one): their older
    messages must not be taken for the trial's result."""
    return message_of(job_pods(clients, namespace, job))


def message_of(pods: list[Any]) -> dict[str, Any] | None:
    """termination_message, from the Job's pods already listed."""
    found: list[tuple[bool, str, dict[str, Any]]] = []  # (succeeded, finished at, message)
    for pod in pods:
        if pod.status is None:
            continue
        succeeded = getattr(pod.status, "phase", None) == "Succeeded"
        for cs in pod.status.container_statuses or []:
            term = cs.state.terminated if cs.state else None
            if term is None or not term.message:
                continue
            try:
                parsed = json.loads(term.message)
            except json.JSONDecodeError:
                continue
            if isinstance(parsed, dict):
                finished = getattr(term, "finished_at", None)
                found.append((succeeded, str(finished or ""), parsed))
    if not found:
        return None
    return max(found, key=lambda f: (f[0], f[1]))[2]
