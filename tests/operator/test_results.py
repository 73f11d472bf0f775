"""Reading a finished trial's result: Prometheus first, the termination message when it has none."""

from __future__ import annotations

import json
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

from isoflop import api
from isoflop.cluster.clients import Clients, pods_by_job
from isoflop.cluster.reconcile import same
from isoflop.cluster.results import read_result
from tests.trainer.helpers import free_port


def pod(job: str, message: str, phase: str | None = None, finished: str | None = None) -> Any:
    """A pod as the API server sends it (JSON): the operator reads the list without the
    client's models."""
    terminated = {"message": message, "finishedAt": finished}
    status = {"phase": phase, "containerStatuses": [{"state": {"terminated": terminated}}]}
    return {"metadata": {"labels": {"job-name": job}}, "status": status}


class Core:
    def __init__(self, pods: list[Any]) -> None:
        self.pods = pods

    def list_namespaced_pod(
        self, namespace: str, label_selector: str, _preload_content: bool = True
    ) -> Any:
        assert _preload_content is False  # one JSON list, never 600 models built
        return SimpleNamespace(data=json.dumps({"items": self.pods}).encode())


def of_job(clients: Clients, job: str = "s-t1") -> Any:
    """The trial Job's pods as the reconcile gives them: one list of the sweep's, by Job."""
    return lambda: pods_by_job(clients, "default", "isoflop.dev/sweep=s").get(job, [])


def spec(prometheus: str | None) -> api.ScalingSweepSpec:
    metrics = {"prometheusUrl": prometheus, "queryTimeoutSeconds": 1} if prometheus else {}
    return api.parse_spec({"model": {"depths": [1, 2, 3]}, "budgets": [1e17], "metrics": metrics})


def test_prometheus_down_falls_back_to_the_termination_message() -> None:
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    message = json.dumps(
        {"status": "succeeded", "eval_loss": 0.4321, "eval_fid": 12.5, "eval_bpd": float("nan")}
    )
    clients = Clients(batch=None, core=Core([pod("s-t1", message)]))
    assert read_result(of_job(clients), spec(down), "s", "default", "t1") == (
        0.4321,
        "termination-message",
        "",
        {"fid": 12.5},  # a metric that is not a number is left out, not fitted
    )


def test_no_result_yet_is_retried_and_nan_or_failure_is_a_failed_trial() -> None:
    nothing = Clients(batch=None, core=Core([]))
    assert read_result(of_job(nothing), spec(None), "s", "default", "t1") is None  # try again later
    nan = Clients(
        batch=None,
        core=Core([pod("s-t1", json.dumps({"status": "succeeded", "eval_loss": "nan"}))]),
    )
    loss, _, note, _ = read_result(of_job(nan), spec(None), "s", "default", "t1")  # type: ignore[misc]
    assert loss is None
    assert "not a number to fit" in note
    failed = Clients(
        batch=None, core=Core([pod("s-t1", json.dumps({"status": "failed", "error": "boom"}))])
    )
    loss, _, note, _ = read_result(of_job(failed), spec(None), "s", "default", "t1")  # type: ignore[misc]
    assert loss is None
    assert note == "the trainer reported failed: boom"
    other = Clients(
        batch=None,
        core=Core([pod("other-job", json.dumps({"status": "succeeded", "eval_loss": 1}))]),
    )
    assert read_result(of_job(other), spec(None), "s", "default", "t1") is None  # another Job's pod


def test_the_result_is_the_succeeded_pods_not_an_earlier_preempted_ones() -> None:
    """A Job retries a preempted pod; both pods keep their messages. The real API server lists
    them in name order, so the older one can come first."""
    preempted = pod("s-t1", json.dumps({"status": "preempted"}), "Failed", "2026-11-30T10:00:00Z")
    done = json.dumps({"status": "succeeded", "eval_loss": 0.25})
    succeeded = pod("s-t1", done, "Succeeded", "2026-11-30T10:05:00Z")
    for order in ([preempted, succeeded], [succeeded, preempted]):
        clients = Clients(batch=None, core=Core(order))
        assert read_result(of_job(clients), spec(None), "s", "default", "t1") == (
            0.25,
            "termination-message",
            "",
            {},
        )
    # no pod succeeded (a failed Job): the last one to end says why
    failed = pod(
        "s-t1", json.dumps({"status": "failed", "error": "late"}), "Failed", "2026-11-30T11:00:00Z"
    )
    clients = Clients(batch=None, core=Core([failed, preempted]))
    loss, _, note, _ = read_result(of_job(clients), spec(None), "s", "default", "t1")  # type: ignore[misc]
    assert loss is None
    assert note == "the trainer reported failed: late"


def test_a_status_the_server_wrote_back_is_the_same_as_the_one_sent() -> None:
    """The API server writes a float beyond 2^53 back as the integer of its shortest decimal form
    (1.29746337890625e17 -> 129746337890625000, which Python keeps exact and != the float): the
    operator must not take that for a change, patch it again and refit on every reconcile."""
    budget = 1e15 * 1.5**12
    written = int(Decimal(repr(budget)))  # what the server returns: 129746337890625000
    back = {"budgets": [{"budget": written, "trials": 50}]}
    assert back["budgets"][0]["budget"] != budget  # what the server returns is not == the float
    assert same(back["budgets"], [{"budget": budget, "trials": 50}])
    assert float(back["budgets"][0]["budget"]) == budget
    assert not same([{"budget": budget, "trials": 50}], [{"budget": budget, "trials": 51}])
    assert not same({"a": True}, {"a": 1})
    assert not same({"a": 1}, {"a": 1, "b": 2})
    assert same("x", "x")
    assert not same("x", "y")
