"""The webhook handler as kopf calls it, with a recording authorizer in place of the API server:
what it asks (SubjectAccessReviews as the requesting user), and how it answers kopf (the
AdmissionError code and sentence). The real server's answers are in tests/e2e/test_admission.py."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import kopf
import pytest

from isoflop.cluster import handlers, policy
from isoflop.cluster.clients import Clients
from tests.corpus import base_manifest

ALICE = {"username": "alice", "uid": "u-1", "groups": ["team-a", "system:authenticated"]}


class Authorization:
    """Allows what `allowed` lists as (verb, resource, name); records each review it gets."""

    def __init__(self, *allowed: tuple[str, str, str | None]) -> None:
        self.allowed = set(allowed)
        self.reviews: list[Any] = []

    def create_subject_access_review(self, review: Any) -> Any:
        self.reviews.append(review)
        a = review.spec.resource_attributes
        return SimpleNamespace(
            status=SimpleNamespace(allowed=(a.verb, a.resource, a.name) in self.allowed)
        )


class DryRuns:
    """The API server's batch and core APIs as the webhook's dry runs meet them: each create is
    recorded (kind, its dry-run flag); `refuse` maps a kind to the ApiException it answers."""

    def __init__(self, refuse: dict[str, Any] | None = None) -> None:
        self.created: list[tuple[str, str | None]] = []
        self.refuse = refuse or {}

    def _create(self, kind: str, body: dict[str, Any], dry_run: str | None) -> dict[str, Any]:
        self.created.append((kind, dry_run))
        if kind in self.refuse:
            raise self.refuse[kind]
        return body

    def create_namespaced_job(self, namespace: str, body: Any, dry_run: str | None = None) -> Any:
        return self._create("Job", body, dry_run)

    def create_namespaced_pod(self, namespace: str, body: Any, dry_run: str | None = None) -> Any:
        return self._create("Pod", body, dry_run)

    def create_namespaced_service(
        self, namespace: str, body: Any, dry_run: str | None = None
    ) -> Any:
        return self._create("Service", body, dry_run)


def call(
    auth: Authorization,
    spec: dict[str, Any],
    operation: str = "CREATE",
    old: Any = None,
    server: DryRuns | None = None,
) -> None:
    server = server or DryRuns()
    memo = SimpleNamespace(
        clients=Clients(batch=server, core=server, authorization=auth),
        policy=policy.Policy(),
    )
    handlers.validate(
        name="quick",
        namespace="ml",
        spec=spec,
        userinfo=ALICE,
        memo=memo,
        old=old,
        new={"spec": spec},
        operation=operation,
    )


def test_reviews_are_asked_as_the_requesting_user_for_exactly_what_the_sweep_names() -> None:
    spec = base_manifest()["spec"]
    spec["resources"] = {"serviceAccountName": "trainer"}
    auth = Authorization(("create", "jobs", None), ("impersonate", "serviceaccounts", "trainer"))
    call(auth, spec)  # allowed: no exception
    asked = [r.spec for r in auth.reviews]
    assert {(s.user, s.uid, tuple(s.groups)) for s in asked} == {
        ("alice", "u-1", ("team-a", "system:authenticated"))
    }
    attrs = [
        (a.namespace, a.verb, a.group, a.resource, a.name)
        for a in (s.resource_attributes for s in asked)
    ]
    assert attrs == [
        ("ml", "create", "batch", "jobs", None),
        ("ml", "use", "", "serviceaccounts", "trainer"),
        ("ml", "impersonate", "", "serviceaccounts", "trainer"),
    ]


def test_a_missing_right_is_a_403_with_the_sentence_and_an_invalid_spec_a_422() -> None:
    spec = base_manifest()["spec"]
    spec["resources"] = {"s3CredentialsSecret": "keys"}
    with pytest.raises(kopf.AdmissionError) as refused:
        call(Authorization(("create", "jobs", None)), spec)
    assert refused.value.code == 403
    assert str(refused.value) == (
        "alice may not get the Secret 'keys' (spec.resources.s3CredentialsSecret) in namespace "
        "'ml'; a sweep runs only what its creator could run"
    )
    bad = base_manifest()["spec"]
    bad["model"]["mlpRatio"] = 1e-9
    auth = Authorization()
    with pytest.raises(kopf.AdmissionError) as invalid:
        call(auth, bad)
    assert invalid.value.code == 422
    assert "mlp_ratio 1e-09 gives an empty MLP" in str(invalid.value)
    assert auth.reviews == []  # nothing asked for a sweep that cannot run anyway
    one_budget = {**base_manifest()["spec"], "budgets": [1e11]}  # runs, but gives no law
    with pytest.raises(kopf.AdmissionError) as lawless:
        call(auth, one_budget)
    assert lawless.value.code == 422
    assert "a scaling law needs 2 or more budgets with 3 or more feasible model sizes each: " \
        "1e+11 has" in str(lawless.value)  # fmt: skip


def test_an_update_that_keeps_the_spec_asks_nothing() -> None:
    spec = base_manifest()["spec"]
    auth = Authorization()  # would refuse everything
    call(auth, spec, operation="UPDATE", old={"spec": spec})
    assert auth.reviews == []
    with pytest.raises(kopf.AdmissionError):
        call(auth, spec, operation="UPDATE", old={"spec": {**spec, "budgets": [1e11]}})


def test_annotations_that_leave_no_room_for_the_operators_copy_are_refused() -> None:
    """kopf keeps a copy of a sweep's annotations in its own: a legal 200 KiB annotation would
    push the object past the server's 256 KiB at its first patch (a 422, retried for ever).
    The webhook refuses more than 64 KiB of the user's own; kopf's patches of its bookkeeping
    (the same user annotations) pass."""
    spec = base_manifest()["spec"]
    auth = Authorization(("create", "jobs", None))
    memo = SimpleNamespace(
        clients=Clients(batch=DryRuns(), core=DryRuns(), authorization=auth),
        policy=policy.Policy(),
    )

    def review(annotations: dict[str, str], operation: str = "CREATE", old: Any = None) -> None:
        handlers.validate(
            name="quick", namespace="ml", spec=spec, userinfo=ALICE, memo=memo, old=old,
            new={"spec": spec, "metadata": {"name": "quick", "annotations": annotations}},
            operation=operation,
        )  # fmt: skip

    with pytest.raises(kopf.AdmissionError) as refused:
        review({"notes": "x" * 200_000})
    assert refused.value.code == 422
    assert str(refused.value) == (
        "metadata.annotations take 200005 bytes, more than a sweep's 65536: the operator's and "
        "kubectl's copies of them must fit the object's 262144"
    )
    review({"notes": "x" * 60_000})  # within: no review of rights fails here
    kopf_copy = {"notes": "x" * 60_000, "kopf.zalando.org/last-handled-configuration": "y" * 70_000}
    old = {"spec": spec, "metadata": {"name": "quick", "annotations": {"notes": "x" * 60_000}}}
    review(kopf_copy, operation="UPDATE", old=old)


def test_a_workload_priority_without_a_queue_is_refused_where_no_default_queue_exists(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Kueue's priority label goes only with a queue: without one (none named, no default) it
    was silently dropped."""
    spec = base_manifest()["spec"]
    spec["resources"] = {"workloadPriorityClass": "high"}
    monkeypatch.delenv("ISOFLOP_DEFAULT_QUEUE", raising=False)
    with pytest.raises(kopf.AdmissionError) as refused:
        call(Authorization(("create", "jobs", None)), spec)
    assert refused.value.code == 422
    assert str(refused.value).startswith(
        "spec.resources.workloadPriorityClass needs a Kueue queue: set spec.resources.queueName"
    )
    call(Authorization(("create", "jobs", None)), {**spec, "resources": {
        "workloadPriorityClass": "high", "queueName": "mine"}})  # fmt: skip
    monkeypatch.setenv("ISOFLOP_DEFAULT_QUEUE", "team-a")
    call(Authorization(("create", "jobs", None)), spec)  # the installation's queue takes it


def test_an_mlflow_sweep_needs_a_server_and_its_creator_must_read_its_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A sweep asking for MLflow with no server anywhere is refused (never silently left
    untracked); its credentials Secret goes to its pods, so its creator must be able to get it."""
    monkeypatch.delenv("ISOFLOP_MLFLOW_TRACKING_URI", raising=False)
    spec = {**base_manifest()["spec"], "tracking": {"mlflow": {"experiment": "mine"}}}
    jobs = Authorization(("create", "jobs", None))
    with pytest.raises(kopf.AdmissionError) as refused:
        call(jobs, spec)
    assert refused.value.code == 422
    assert str(refused.value) == (
        "spec.tracking.mlflow names no trackingUri and this installation has no default MLflow "
        "server (tracking.mlflow.trackingUri)"
    )
    monkeypatch.setenv("ISOFLOP_MLFLOW_TRACKING_URI", "http://mlflow.ml:5000")
    call(jobs, spec)  # the installation's server takes it
    mlflow = {"trackingUri": "http://m:5000", "credentialsSecret": "mlflow-token"}
    secret = {**spec, "tracking": {"mlflow": mlflow}}
    with pytest.raises(kopf.AdmissionError) as refused:
        call(jobs, secret)
    assert refused.value.code == 403
    assert str(refused.value) == (
        "alice may not get the Secret 'mlflow-token' (spec.tracking.mlflow.credentialsSecret) in "
        "namespace 'ml'; a sweep runs only what its creator could run"
    )
    call(Authorization(("create", "jobs", None), ("get", "secrets", "mlflow-token")), secret)


def test_the_children_are_dry_run_once_per_shape_and_a_refusal_is_the_servers_sentence() -> None:
    """After the offline rules and the sender's rights, the webhook asks the API server (dryRun
    All) for one object of each distinct shape: the quickstart's 36 trials are one (a Job and
    its pod), a 2-node sweep's adds its headless Service, and a refusal comes back as a 422
    with the server's own words."""
    from kubernetes.client.rest import ApiException

    spec = base_manifest()["spec"]
    server = DryRuns()
    call(Authorization(("create", "jobs", None)), spec, server=server)
    assert server.created == [("Job", "All"), ("Pod", "All")]  # never created for real
    multi = DryRuns()
    call(Authorization(("create", "jobs", None)), {**spec, "resources": {"nodes": 2}}, server=multi)
    assert [kind for kind, _ in multi.created] == ["Job", "Pod", "Service"]
    refused = ApiException(status=403, reason="Forbidden")
    refused.body = json.dumps(
        {"message": 'pods "qs-3e10-d2w40-" is forbidden: no PriorityClass with name nope was found'}
    )
    with pytest.raises(kopf.AdmissionError) as err:
        call(Authorization(("create", "jobs", None)), spec, server=DryRuns({"Pod": refused}))
    assert err.value.code == 422
    assert str(err.value) == (
        'the API server would refuse a trial\'s pod: pods "qs-3e10-d2w40-" is forbidden: no '
        "PriorityClass with name nope was found"
    )
    # the checker's own missing rights say nothing about the sweep: it is admitted
    mine = ApiException(status=403, reason="Forbidden")
    mine.body = json.dumps(
        {"message": 'pods is forbidden: User "system:serviceaccount:x:op" cannot create resource'}
    )
    call(Authorization(("create", "jobs", None)), spec, server=DryRuns({"Pod": mine}))
