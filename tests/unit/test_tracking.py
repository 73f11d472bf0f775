"""spec.tracking and the sweep's side of MLflow, without a server: where a sweep is tracked, what
its experiment is called, and the fitted laws as metrics."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from isoflop import api
from isoflop.tracking.experiment import (
    SweepTracking,
    experiment_name,
    experiment_url,
    fit_metrics,
    resolve_uri,
)
from isoflop_trainer.components.tracking import KEY_TAG, PARENT_TAG, describe, refused
from isoflop_trainer.config import TrainConfig
from tests.trainer.helpers import tiny

ROOT = Path(__file__).resolve().parents[2]


def spec(**tracking: object) -> api.ScalingSweepSpec:
    base = api.load_sweep(ROOT / "examples" / "quickstart.yaml").spec
    return base.model_validate({**base.to_wire(), "tracking": tracking})


def test_a_sweep_is_tracked_where_its_spec_or_the_environment_says() -> None:
    assert resolve_uri(spec(), {}) is None
    assert resolve_uri(spec(), {"MLFLOW_TRACKING_URI": "http://m:5000"}) == "http://m:5000"
    named = spec(mlflow={"trackingUri": "https://mlflow.example.com"})
    assert resolve_uri(named, {"MLFLOW_TRACKING_URI": "http://m:5000"}).startswith("https://")
    with pytest.raises(ValueError, match="names no trackingUri and MLFLOW_TRACKING_URI"):
        resolve_uri(spec(mlflow={}), {})
    assert experiment_name(spec(), "quick", None) == "isoflop/quick"
    assert experiment_name(spec(), "quick", "team-a") == "isoflop/team-a/quick"
    assert experiment_name(spec(mlflow={"experiment": "dit scaling"}), "q", "a") == "dit scaling"
    assert experiment_url("http://m:5000/", "7") == "http://m:5000/#/experiments/7"
    assert experiment_url("file:///tmp/mlruns", "7") is None


@pytest.mark.parametrize(
    ("tracking", "message"),
    [
        ({"mlflow": {"trackingUri": "ftp://m"}}, "trackingUri"),
        ({"mlflow": {"experiment": ""}}, "at least 1 character"),
        ({"mlflow": {"experiment": "a\nb"}}, "experiment"),
        ({"mlflow": {"credentialsSecret": "Not_A_Name"}}, "credentialsSecret"),
        ({"mlflow": {"trackingURI": "http://m"}}, "trackingURI"),
    ],
)
def test_a_bad_tracking_spec_is_refused(tracking: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        spec(**tracking)


def test_a_trial_learns_its_parent_and_key_from_the_sweep() -> None:
    def nowhere(uri: str) -> object:
        raise ConnectionRefusedError(f"no server at {uri}")

    tracking = SweepTracking(
        "http://127.0.0.1:1", "isoflop/q", "q", "uid-9", "team-a", 0.1, client=nowhere
    )
    fields = tracking.trial_fields("1e10-d02", 1e10, {"predicted_loss": 0.5})
    assert fields["tracking_parent"] is None  # not made yet: the trainer finds it by key
    assert fields["tracking_tags"][KEY_TAG] == "uid-9/trial/1e10-d02"
    assert fields["tracking_tags"][PARENT_TAG] == "uid-9/budget/1e+10"
    assert fields["tracking_tags"]["isoflop.namespace"] == "team-a"
    assert fields["tracking_params"] == {"predicted_loss": "0.5"}
    cfg = tiny(**fields)  # what the trainer takes, round-tripped as the pod's JSON
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="tracking_uri needs tracking_experiment"):
        tiny(tracking_uri="http://m")
    tracking.close(None)  # the budget's run was never made: said, not raised
    assert tracking.status().not_logged == [
        "run q: budget 1e+10: MLflow: 2 values not logged, no run was made (last error: "
        "ConnectionRefusedError: no server at http://127.0.0.1:1)"
    ]


def test_the_fitted_laws_become_metrics_with_their_intervals() -> None:
    interval = api.Interval(low=0.4, high=0.6)
    fit = api.FitResult(
        laws=api.Laws(
            params=api.PowerLaw(
                coefficient=0.1, exponent=0.5, points=4, exponent_interval=interval
            ),
            loss=api.PowerLaw(coefficient=3.0, exponent=-0.05, points=4),
        ),
        predictions=[api.Prediction(budget=1e21, params=api.Estimate(value=1e9))],
    )
    metrics = fit_metrics(fit)
    assert metrics["params_exponent"] == 0.5
    assert (metrics["params_exponent_low"], metrics["params_exponent_high"]) == (0.4, 0.6)
    assert metrics["loss_exponent"] == -0.05
    assert "loss_exponent_low" not in metrics  # no interval: none invented
    assert metrics["predicted_params_at_1e21"] == 1e9
    assert "tokens_exponent" not in metrics


def test_a_failed_request_is_said_in_a_line_and_refusals_told_from_outages() -> None:
    from mlflow.exceptions import MlflowException, RestException

    down = MlflowException(
        "API request to http://h:1/api/2.0/mlflow/runs/log-batch failed with exception "
        "HTTPConnectionPool(host='h', port=1): Max retries exceeded (Caused by "
        "NewConnectionError('<urllib3.connection.HTTPConnection>: Failed to establish a new "
        "connection: [Errno 111] Connection refused'))"
    )
    assert describe(down) == "runs/log-batch: Connection refused"
    assert not refused(down)
    no = RestException({"error_code": "INVALID_PARAMETER_VALUE", "message": "changed param"})
    assert refused(no)
    assert describe(no).startswith("RestException: INVALID_PARAMETER_VALUE")
