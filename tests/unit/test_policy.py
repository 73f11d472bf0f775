"""The installation's allowlists: images, ServiceAccounts, Prometheus URLs."""

from __future__ import annotations

import pytest

from isoflop import api
from isoflop.cluster.policy import Policy, check
from tests.corpus import base_manifest


def spec(**resources: object) -> api.ScalingSweepSpec:
    obj = base_manifest()
    metrics = resources.pop("metrics", None)
    obj["spec"]["resources"] = resources
    if metrics is not None:
        obj["spec"]["metrics"] = metrics
    return api.parse_sweep(obj).spec


def test_no_policy_allows_any_image_and_account() -> None:
    assert check(spec(image="evil.example/miner:1", serviceAccountName="admin"), Policy()) is None


def test_images_and_accounts_outside_the_allowlists_are_refused_with_a_sentence() -> None:
    policy = Policy.from_env(
        {
            "ISOFLOP_ALLOWED_IMAGES": "ghcr.io/isoflop/*, registry.corp/ml/*",
            "ISOFLOP_ALLOWED_SERVICE_ACCOUNTS": "default,trainer",
        }
    )
    assert check(spec(image="ghcr.io/isoflop/trainer:0.2.0"), policy) is None
    assert check(spec(image="registry.corp/ml/dit:7", serviceAccountName="trainer"), policy) is None
    said = check(spec(image="docker.io/evil/miner:1"), policy)
    assert said == (
        "spec.resources.image 'docker.io/evil/miner:1' is not allowed by this installation "
        "(allowed: ghcr.io/isoflop/*, registry.corp/ml/*)"
    )
    said = check(spec(image="ghcr.io/isoflop/trainer:1", serviceAccountName="admin"), policy)
    assert said is not None
    assert said.startswith("spec.resources.serviceAccountName 'admin' is not allowed")


def test_an_empty_allowlist_allows_nothing() -> None:
    policy = Policy.from_env({"ISOFLOP_ALLOWED_PROMETHEUS_URLS": ""})
    url = {"prometheusUrl": "http://prometheus.monitoring:9090"}
    said = check(spec(metrics=url), policy)
    assert said is not None
    assert said.endswith("(allowed: none)")
    assert check(spec(), policy) is None  # no URL asked: the operator's own is used


@pytest.mark.parametrize(
    "url", ["http://169.254.169.254/latest/meta-data", "http://[fe80::1]:9090"]
)
def test_a_metadata_address_is_never_prometheus(url: str) -> None:
    said = check(spec(metrics={"prometheusUrl": url}), Policy())
    assert said is not None
    assert "link-local" in said


def test_prometheus_urls_by_pattern() -> None:
    policy = Policy(prometheus_urls=("http://prometheus-operated.monitoring:9090*",))
    ok = {"prometheusUrl": "http://prometheus-operated.monitoring:9090"}
    assert check(spec(metrics=ok), policy) is None
    other = {"prometheusUrl": "http://kube-apiserver.default:443"}
    assert check(spec(metrics=other), policy) is not None


def tracked(uri: str) -> api.ScalingSweepSpec:
    obj = base_manifest()
    obj["spec"]["tracking"] = {"mlflow": {"trackingUri": uri}}
    return api.parse_sweep(obj).spec


def test_mlflow_servers_by_pattern_and_never_a_metadata_address() -> None:
    """The operator logs a sweep's budget and fit runs to its trackingUri: only where the
    installation allows, and never a link-local address in any spelling."""
    policy = Policy.from_env({"ISOFLOP_ALLOWED_MLFLOW_URIS": "http://mlflow.ml:5000*"})
    assert check(tracked("http://mlflow.ml:5000"), policy) is None
    assert check(tracked("http://mlflow.ml:5000/"), policy) is None
    assert check(tracked("http://attacker.example:5000"), policy) == (
        "spec.tracking.mlflow.trackingUri 'http://attacker.example:5000' is not allowed by this "
        "installation (allowed: http://mlflow.ml:5000*)"
    )
    for uri in ("http://169.254.169.254/", "http://2852039166:80", "http://[::ffff:a9fe:a9fe]"):
        said = check(tracked(uri), Policy())
        assert said == (
            f"spec.tracking.mlflow.trackingUri {uri!r} is a link-local or cloud metadata "
            "address, never an MLflow server"
        )
    assert check(spec(), Policy(mlflow_uris=())) is None  # no server asked: the installation's
