"""The admission decision without a cluster: what a sweep needs its sender to be allowed, and the
sentence that refuses it. The authorizer is a set of allowed accesses, and records what it is
asked."""

from __future__ import annotations

from isoflop import api
from isoflop.cluster.admission import Access, needs, refusal, spec_changed
from tests.corpus import base_manifest

JOBS = Access("create", "batch", "jobs")


def spec(**resources: object) -> api.ScalingSweepSpec:
    obj = base_manifest()
    obj["spec"]["resources"] = resources
    return api.parse_sweep(obj).spec


class Authorizer:
    def __init__(self, *allowed: Access) -> None:
        self.allowed = set(allowed)
        self.asked: list[Access] = []

    def __call__(self, access: Access) -> bool:
        self.asked.append(access)
        return access in self.allowed


def test_a_plain_sweep_needs_only_to_create_jobs() -> None:
    plain = spec()
    assert [n.any_of for n in needs(plain)] == [(JOBS,)]
    may = Authorizer(JOBS)
    assert refusal("alice", "ml", plain, may) is None
    assert may.asked == [JOBS]
    said = refusal("bob", "ml", plain, Authorizer())
    assert said == (
        "bob may not create Jobs in namespace 'ml'; a sweep runs only what its creator could run"
    )


def test_a_named_service_account_needs_use_or_impersonate_on_exactly_that_account() -> None:
    sweep = spec(serviceAccountName="trainer")
    use = Access("use", "", "serviceaccounts", "trainer")
    impersonate = Access("impersonate", "", "serviceaccounts", "trainer")
    assert refusal("alice", "ml", sweep, Authorizer(JOBS, use)) is None
    assert refusal("alice", "ml", sweep, Authorizer(JOBS, impersonate)) is None
    other = Access("use", "", "serviceaccounts", "default")  # another account's right is no use
    said = refusal("carol", "ml", sweep, Authorizer(JOBS, other))
    assert said is not None
    assert said.startswith(
        "carol may not use the ServiceAccount 'trainer' (spec.resources.serviceAccountName) in"
    )
    # satisfied by the first access: impersonate is not asked about when use is allowed
    may = Authorizer(JOBS, use)
    refusal("alice", "ml", sweep, may)
    assert impersonate not in may.asked


def test_named_s3_credentials_need_get_on_that_secret_and_every_missing_right_is_named() -> None:
    sweep = spec(serviceAccountName="trainer", s3CredentialsSecret="s3-keys")
    secret = Access("get", "", "secrets", "s3-keys")
    use = Access("use", "", "serviceaccounts", "trainer")
    assert refusal("alice", "ml", sweep, Authorizer(JOBS, use, secret)) is None
    said = refusal("bob", "ml", sweep, Authorizer())
    assert said == (
        "bob may not create Jobs, use the ServiceAccount 'trainer' "
        "(spec.resources.serviceAccountName) or get the Secret 's3-keys' "
        "(spec.resources.s3CredentialsSecret) in namespace 'ml'; a sweep runs only what its "
        "creator could run"
    )
    said = refusal("dave", "ml", sweep, Authorizer(JOBS, use))
    assert said is not None
    assert "dave may not get the Secret 's3-keys'" in said
    assert "create Jobs" not in said


def test_only_a_change_of_spec_is_checked() -> None:
    body = {"metadata": {"name": "s"}, "spec": {"a": 1}}
    relabelled = {"metadata": {"name": "s", "labels": {"x": "y"}}, "spec": {"a": 1}}
    assert spec_changed("CREATE", None, body)
    assert not spec_changed("UPDATE", body, relabelled)  # kopf's annotations, a label
    assert spec_changed("UPDATE", body, {**body, "spec": {"a": 2}})
