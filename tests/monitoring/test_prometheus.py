"""A real Prometheus on 127.0.0.1 scraping a real CPU trainer run and the real operator's metrics
endpoint (kopf + the kubernetes client on the kmock emulator, which plays the cluster):

- the operator's result query returns the trainer's final eval loss (source: prometheus), and
  trials Prometheus has no sample for fall back to the termination message;
- every dashboard query and variable returns data, but for a documented allow-list;
- every alert expression parses, evaluates without error inside Prometheus, and the series it reads
  exist.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from isoflop import api
from isoflop.sweep.plan import plan
from isoflop.sweep.trials import train_config
from tests.monitoring.conftest import DASHBOARD, RULES, Prometheus, start_prometheus
from tests.operator.conftest import k8s, kmock_options, operator_process, wait_for  # noqa: F401
from tests.operator.emulator import SWEEPS_URL, ended_pod, finish, trial_records
from tests.operator.test_operator import jobs, loss_of
from tests.trainer.helpers import env, free_port, train_command

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE, SWEEP = "default", "mon"

# Dashboard queries that cannot have data here, and why.
NO_DATA_ON_CPU = {
    "GPU utilisation (DCGM)": "DCGM exporter metrics exist only on GPU nodes",
    "GPU memory used (DCGM)": "DCGM exporter metrics exist only on GPU nodes",
    # a series appears only once measured: on CPU no peak FLOP/s is known, so no MFU
    "Model FLOPs utilisation": "MFU needs a GPU's known peak; a CPU trial reports none",
}


def manifest() -> dict[str, Any]:
    obj = api.yaml_load((ROOT / "examples" / "quickstart.yaml").read_text())
    obj["metadata"] = {
        "name": SWEEP,
        "namespace": NAMESPACE,
        "uid": "uid-mon",
        "generation": 1,
        "resourceVersion": "1",
    }
    obj["spec"]["parallelism"] = 4
    obj["spec"]["retries"] = {"perTrial": 2, "maxFailedTrials": 0}
    # through a Kueue queue: Jobs are created suspended, and queued until admitted (below)
    obj["spec"]["resources"] = {"queueName": "team"}
    obj["spec"]["fit"]["bootstrap"] = 100
    # the scraped trial measures FID and bits/dim too: their dashboard panels show real values
    obj["spec"]["evaluation"] = {
        "fid": {"samples": 16, "steps": 2, "features": "random-conv"},
        "likelihood": {"samples": 4, "steps": 4},
    }
    return obj


def substitute(expr: str, budget: str) -> str:
    """Grafana's variables and macros, as Grafana would send them for this sweep."""
    for name, value in {
        "$namespace": NAMESPACE,
        "$sweep": SWEEP,
        "$budget": budget,
        "$__rate_interval": "15s",
        "$__range": "1h",
        "$__interval": "5s",
    }.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, expr
    return expr


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(isoflop_\w+|up)\b(?=\s*[{\[)])", expr))


async def test_prometheus_serves_results_dashboard_and_alerts(
    k8s: Any,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    prometheus_server: list[Prometheus],
) -> None:
    start = time.time()
    trainer_port, operator_port, prom_port = free_port(), free_port(), free_port()
    prom = start_prometheus(
        tmp_path / "prometheus",
        prom_port,
        [
            {  # as the chart's PodMonitor: the pod's namespace, job isoflop-trials
                "job_name": "isoflop-trials",
                "static_configs": [
                    {"targets": [f"127.0.0.1:{trainer_port}"], "labels": {"namespace": NAMESPACE}}
                ],
            },
            {  # as the chart's ServiceMonitor: the sweeps' namespaces kept (honor_labels)
                "job_name": "isoflop-operator",
                "honor_labels": True,
                "static_configs": [{"targets": [f"127.0.0.1:{operator_port}"]}],
            },
        ],
        [RULES],
    )
    prometheus_server.append(prom)

    # 1. A real trial of the sweep, trained on CPU, serving its metrics until Prometheus has them
    obj = manifest()
    sweep = api.parse_sweep(obj)
    trials = plan(sweep.spec).trials
    scraped = trials[0]
    cfg = train_config(sweep.spec, SWEEP, scraped, results=str(tmp_path / "result.json"))
    cfg = dataclasses.replace(
        cfg,
        termination_log=None,
        metrics_port=trainer_port,
        metrics_address="127.0.0.1",
        metrics_linger_seconds=60,
        log_every=1,
    )
    trainer = subprocess.Popen(train_command(cfg), env=env(), stderr=subprocess.PIPE, text=True)
    try:
        selector = f'namespace="{NAMESPACE}",sweep="{SWEEP}",trial="{scraped.id}"'
        prom.wait_for(f"isoflop_eval_loss{{{selector}}}", timeout=180)
        prom.wait_for(f"isoflop_done{{{selector}}} == 1", timeout=10)
    finally:
        trainer.terminate()  # it lingers for the scraper; Prometheus has what it needs
        _, err = trainer.communicate(timeout=30)
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["status"] == "succeeded", err
    trained_loss = result["eval_loss"]

    # 2. The operator runs the sweep; Prometheus is its default result source (chart value)
    monkeypatch.setenv("ISOFLOP_METRICS_PORT", str(operator_port))
    monkeypatch.setenv("ISOFLOP_METRICS_ADDRESS", "127.0.0.1")
    monkeypatch.setenv("ISOFLOP_PROMETHEUS_URL", prom.url)

    def status() -> dict[str, Any]:
        key = next(k for k in k8s.objects if k[2] == SWEEP and k[1] == NAMESPACE)
        return dict(k8s.objects[key].get("status") or {})

    def synthetic(trial: Any) -> float:
        """Other trials' losses: the operator tests' isoFLOP curves, through the trained loss."""
        return float(trained_loss + loss_of(trial) - loss_of(scraped))

    names = {f"{SWEEP}-{t.id}": t for t in trials}
    flaky = f"{SWEEP}-{trials[1].id}"
    async with operator_process(k8s, tmp_path / "operator.log"):
        resp = await k8s.post(SWEEPS_URL, json=obj)
        assert resp.status == 200
        await wait_for(lambda: flaky in jobs(k8s), timeout=30)
        # the queued gauge, through Prometheus, while Kueue has admitted none of them
        queued = f'isoflop_operator_trials{{sweep="{SWEEP}",phase="queued"}} == 4'
        await asyncio.to_thread(prom.wait_for, queued, 30)
        jobs_url = f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs"

        async def admit(name: str) -> None:  # as Kueue does: unsuspend the Job
            await k8s.patch(f"{jobs_url}/{name}", json={"spec": {"suspend": False}})

        for name in list(jobs(k8s)):
            await admit(name)
        # a pod of one trial fails once (the Job retries it): the operator shows the failed attempt
        await k8s.patch(
            f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs/{flaky}/status",
            json={"status": {"active": 1, "failed": 1}},
        )
        await ended_pod(k8s, flaky, {"status": "failed", "error": "flaky"}, 1, suffix="f")
        selector = f'sweep="{SWEEP}",trial="{trials[1].id}"'
        failing = f"isoflop_operator_trial_failed_attempts{{{selector}}} == 1"
        await asyncio.to_thread(prom.wait_for, failing, 30)
        done: set[str] = set()
        while len(done) < len(names):
            for name in [n for n in jobs(k8s) if n not in done and n in names]:
                # the scraped trial's message says otherwise: the status must show Prometheus's
                loss = 99.0 if names[name] is scraped else synthetic(names[name])
                await admit(name)
                await finish(k8s, name, {"status": "succeeded", "eval_loss": loss})
                done.add(name)
            await wait_for(
                lambda: (
                    len(done) == len(names)
                    or any(n not in done and n in names for n in jobs(k8s))
                    or status().get("phase") == "Failed"
                ),
                timeout=30,
            )
            assert status().get("phase") != "Failed", status().get("conditions")
        await wait_for(lambda: status().get("phase") == "Succeeded", timeout=60)
        laws = status()["fit"]["laws"]
        estimate = f'isoflop_operator_exponent{{sweep="{SWEEP}",law="params",bound="estimate"}}'
        await asyncio.to_thread(prom.wait_for, estimate, 30)
        exponent = float(prom.query(estimate)[0]["value"][1])
        await asyncio.sleep(3)  # a few more scrapes and rule evaluations with everything present
        end = time.time()  # the operator's series go stale once it stops: query up to here

    records = {r["id"]: r for r in trial_records(k8s, SWEEP)}
    assert records[scraped.id]["source"] == "prometheus"
    assert records[scraped.id]["loss"] == pytest.approx(trained_loss, rel=1e-12)
    others = [r for tid, r in records.items() if tid != scraped.id and r["phase"] == "Succeeded"]
    assert len(others) == len(names) - 1
    assert {r["source"] for r in others} == {"termination-message"}
    assert records[trials[1].id]["loss"] == pytest.approx(synthetic(trials[1]))
    assert exponent == pytest.approx(laws["params"]["exponent"])

    # 3. Every dashboard variable and query returns data, but for the allow-list
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"] if v["type"] == "query"}
    assert set(variables) == {"namespace", "sweep", "budget"}
    for name, var in variables.items():
        m = re.fullmatch(r"label_values\((.+), (\w+)\)", var["query"]["query"])
        assert m is not None, var["query"]
        match = substitute(m.group(1), ".*")
        body = prom.api(f"label/{m.group(2)}/values", **{"match[]": match})
        assert body["status"] == "success", body
        expected = {"namespace": NAMESPACE, "sweep": SWEEP, "budget": f"{scraped.budget:g}"}
        assert expected[name] in body["data"], (name, body["data"])
    checked = 0
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = substitute(target["expr"], ".*")
            data = prom.query_range(expr, start, end)
            if target.get("instant"):
                data = data and prom.query(expr, at=end)
            if panel["title"] in NO_DATA_ON_CPU:
                assert not data  # if it has data, take it off the allow-list
            else:
                assert data, f"dashboard panel {panel['title']!r}: no data for {expr}"
            checked += 1
    assert checked >= 15

    # 4. Every alert expression parses and evaluates cleanly; the series it reads exist
    rules = prom.api("rules")["data"]["groups"]
    evaluated = {r["name"]: r for g in rules for r in g["rules"]}
    alerts = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    assert set(evaluated) == {r["alert"] for r in alerts}
    for rule in alerts:
        state = evaluated[rule["alert"]]
        assert state["health"] == "ok", (rule["alert"], state.get("lastError"))
        prom.query(rule["expr"])  # parses and runs as a query too
        for metric in metric_names(rule["expr"]):
            assert prom.query_range(f"count({metric})", start, end), (rule["alert"], metric)
    # with the operator up and nothing wrong, nothing fires
    firing = [a for a in prom.api("alerts")["data"]["alerts"] if a["state"] == "firing"]
    assert firing == []
