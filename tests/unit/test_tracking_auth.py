"""The operator's MLflow credentials go to its installation's server and nowhere else."""

from __future__ import annotations

import base64

import pytest
import requests
from mlflow.tracking.request_auth.registry import fetch_auth

from isoflop.tracking import auth

ENV = {
    "ISOFLOP_MLFLOW_TRACKING_URI": "https://mlflow.ml.svc:5000/tracking",
    "ISOFLOP_MLFLOW_TRACKING_TOKEN": "operator-token",
}


def test_the_token_goes_only_under_the_installations_server() -> None:
    base = "https://mlflow.ml.svc:5000/tracking"
    assert (
        auth.authorization(f"{base}/api/2.0/mlflow/runs/log-batch", ENV) == "Bearer operator-token"
    )
    assert auth.authorization(base, ENV) == "Bearer operator-token"
    assert auth.authorization("https://MLFLOW.ml.svc:5000/tracking/x", ENV) is not None
    for elsewhere in (
        "https://attacker.example:5000/tracking/api",  # another host
        "http://mlflow.ml.svc:5000/tracking/api",  # another scheme (in the clear)
        "https://mlflow.ml.svc:5001/tracking/api",  # another port
        "https://mlflow.ml.svc:5000/trackingx/api",  # a path that only starts the same
        "https://mlflow.ml.svc.attacker.example:5000/tracking/api",
        "https://mlflow.ml.svc:5000@attacker.example/tracking",  # userinfo, not the host
    ):
        assert auth.authorization(elsewhere, ENV) is None, elsewhere
    assert auth.authorization(f"{base}/x", {"ISOFLOP_MLFLOW_TRACKING_TOKEN": "t"}) is None


def test_basic_credentials_and_the_default_port() -> None:
    env = {
        "ISOFLOP_MLFLOW_TRACKING_URI": "http://mlflow:80",
        "ISOFLOP_MLFLOW_TRACKING_USERNAME": "isoflop",
        "ISOFLOP_MLFLOW_TRACKING_PASSWORD": "s3cret",
    }
    said = auth.authorization("http://mlflow/api/2.0/mlflow/experiments/get", env)
    assert said == "Basic " + base64.b64encode(b"isoflop:s3cret").decode()


def test_mlflow_finds_the_provider_by_its_entry_point_and_it_sets_the_header(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The package's `mlflow.request_auth_provider` entry point, as MLflow's client loads it for
    MLFLOW_TRACKING_AUTH=isoflop-installation."""
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    found = fetch_auth(auth.NAME)
    assert isinstance(found, auth.InstallationAuth)
    inside = requests.Request("GET", ENV["ISOFLOP_MLFLOW_TRACKING_URI"] + "/api", auth=found)
    outside = requests.Request("GET", "https://elsewhere.example/api", auth=found)
    assert inside.prepare().headers["Authorization"] == "Bearer operator-token"
    assert "Authorization" not in outside.prepare().headers


def test_the_operators_environment_keeps_mlflow_credentials_from_other_servers() -> None:
    env = {"MLFLOW_TRACKING_TOKEN": "t", "MLFLOW_TRACKING_USERNAME": "u", "PATH": "/bin"}
    assert auth.operator_environment(env) == ["MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME"]
    assert env == {
        "PATH": "/bin",
        "MLFLOW_TRACKING_AUTH": "isoflop-installation",
        "MLFLOW_ALLOW_HTTP_REDIRECTS": "false",
        "ISOFLOP_MLFLOW_TRACKING_TOKEN": "t",
        "ISOFLOP_MLFLOW_TRACKING_USERNAME": "u",
    }
