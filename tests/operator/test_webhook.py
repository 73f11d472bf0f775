"""The webhook handler as kopf calls it, with a recording authorizer in place of the API server:
what it asks (SubjectAccessReviews as the requesting user), and how it answers kopf (the
AdmissionError code and sentence). The real server's answers are in tests/e2e/test_admission.py."""

from __future__ import annotations

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


def call(
    auth: Authorization, spec: dict[str, Any], operation: str = "CREATE", old: Any = None
) -> None:
    memo = SimpleNamespace(
        clients=Clients(batch=None, core=None, authorization=auth),
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
        clients=Clients(batch=None, core=None, authorization=auth), policy=policy.Policy()
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
