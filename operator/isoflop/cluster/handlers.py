"""The ScalingSweep operator's kopf handlers: startup, admission, create/update/delete, the
reconcile timer.

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

The handlers are thin: they parse what kopf hands them and call the cluster side's modules
(validation, reconcile, admission); every decision is the engine's (isoflop.sweep.engine).
"""

from __future__ import annotations

import logging
import os
import random
import time
from typing import Any

import kopf
from kubernetes.client.rest import ApiException
from prometheus_client import start_http_server
from pydantic import ValidationError

from isoflop import api
from isoflop.cluster import admission, dryrun, policy, tracking
from isoflop.cluster.clients import make_clients, server_message
from isoflop.cluster.manifests import DEFAULT_QUEUE_ENV
from isoflop.cluster.metrics import ERRORS, LATENCY, forget
from isoflop.cluster.modeljob import model_check, plan_after_check
from isoflop.cluster.reconcile import Sweep, now, reconcile_sweep
from isoflop.cluster.validation import (
    IMMUTABLE,
    admissible,
    can,
    changed_identity,
    get_path,
    identity,
)
from isoflop.tracking.auth import operator_environment

RECONCILE_SECONDS = float(os.environ.get("ISOFLOP_RECONCILE_SECONDS", "10"))
WEBHOOK_PORT = os.environ.get("ISOFLOP_WEBHOOK_PORT")


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
    moved = operator_environment()  # the operator's MLflow credentials: its own server only
    if moved:
        logging.getLogger(__name__).warning(
            "%s: kept for the installation's MLflow server only (renamed ISOFLOP_*)",
            ", ".join(moved),
        )
    memo.children_checked = {}  # sweep uid: the spec digest its children's dry run took
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
    tracking.close_all()  # what the trackers hold, sent (bounded); the runs go on
    server = getattr(memo, "metrics_server", None)
    if server is not None:
        server.shutdown()
        server.server_close()


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


@kopf.on.create(api.GROUP, api.VERSION, api.PLURAL)
@kopf.on.resume(api.GROUP, api.VERSION, api.PLURAL)
def admit(name: str, spec: kopf.Spec, patch: kopf.Patch, memo: Any, **_: Any) -> None:
    """Validate the name and the spec; an invalid one ends here, with a condition naming the field
    (and nothing created)."""
    try:
        admissible(name, spec, memo)
    except api.ManifestError as err:
        raise invalid(patch, str(err)) from None


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
    if admission.metadata_changed(operation, old, new or {}):
        try:  # what the server's own checks leave: the room kopf's copy of the annotations needs
            api.parse_metadata({"name": name, **((new or {}).get("metadata") or {})})
        except api.ManifestError as err:
            raise kopf.AdmissionError(str(err), code=422) from None
    if not admission.spec_changed(operation, old, new or {}):
        return  # metadata only (kopf's annotations, a label): nothing new can run
    try:
        parsed, plan = admissible(name, spec, memo)
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
    # what the API server would say of the children, one dry run per distinct shape
    sweep = api.ScalingSweep(metadata=api.ObjectMeta(name=name, namespace=namespace), spec=parsed)
    queue = os.environ.get(DEFAULT_QUEUE_ENV)
    refused = dryrun.refusal(sweep, plan, namespace, memo.clients, queue)
    if refused is not None:
        raise kopf.AdmissionError(refused, code=422)


if WEBHOOK_PORT:  # kopf refuses to start with admission handlers and no server to serve them
    kopf.on.validate(
        api.GROUP,
        api.VERSION,
        api.PLURAL,
        id=admission.WEBHOOK_ID,
        operations=["CREATE", "UPDATE"],
        side_effects=False,
    )(validate)


@kopf.on.update(api.GROUP, api.VERSION, api.PLURAL, field="spec")
def update(
    name: str, old: Any, new: Any, status: Any, patch: kopf.Patch, memo: Any, **_: Any
) -> None:
    """Refuse changes to what defines a sweep; anything else is picked up by the next reconcile."""
    for path in IMMUTABLE:
        if get_path(old, path) != get_path(new, path) and not (status or {}).get("admitted"):
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
def delete(name: str, namespace: str | None, uid: str, **_: Any) -> None:
    """Children go with their owner (ownerReferences); forget the sweep's metrics and tracking."""
    forget(namespace or "", name)
    tracking.forget(uid)


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
        check = None
        if p is None:  # a class family: planned from its model check, once the check has run
            check = model_check(sweep, uid, namespace, dict(status), memo.clients)
            planned = plan_after_check(sweep, check, status, patch, now())
            if not isinstance(planned, tuple):
                if planned is not None:  # refused: InvalidSpec with the sentence, written once
                    refuse_once(status, patch, planned)
                return
            sweep, p = planned
        checked = dryrun.digest(sweep.spec)
        done = status.get("phase") == "Succeeded"  # it creates nothing any more
        # once per spec: kept in the status, and in memory where a CRD from before the field
        # (helm upgrade never updates CRDs) prunes it
        known: dict[str, str] = memo.children_checked
        if checked not in (status.get("childrenChecked"), known.get(uid)) and not done:
            queue = os.environ.get(DEFAULT_QUEUE_ENV)
            refused = dryrun.refusal(sweep, p, namespace, memo.clients, queue)
            if refused is not None:
                refuse_once(status, patch, refused)
                return
            patch.status["childrenChecked"] = known[uid] = checked
        s = Sweep(
            sweep, p, uid, namespace, dict(status), meta.get("generation"), body, memo.clients,
            model_check=check,
        )  # fmt: skip
        reconcile_sweep(s, patch)
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


def refuse_once(status: Any, patch: kopf.Patch, message: str) -> None:
    """InvalidSpec with this sentence, unless the status already says it."""
    said = [c.get("message") for c in status.get("conditions") or []]
    if message not in said:
        invalid(patch, message)
