"""The Grafana dashboard's structure (its queries run against a real Prometheus in
test_prometheus.py): the variables the issue names, the panels, a consistent layout."""

from __future__ import annotations

import json
from typing import Any

from tests.monitoring.conftest import DASHBOARD


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def test_variables_chain_namespace_sweep_budget() -> None:
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert list(variables) == ["datasource", "namespace", "sweep", "budget"]
    assert variables["datasource"]["query"] == "prometheus"
    assert "$namespace" in variables["sweep"]["query"]["query"]
    assert "$sweep" in variables["budget"]["query"]["query"]
    for name in ("namespace", "sweep", "budget"):
        assert variables[name]["multi"] is True
        assert variables[name]["allValue"] == ".*"  # "All" as a regex the queries can use


def test_panels_cover_what_the_issue_asks_for() -> None:
    panels = [p for p in dashboard()["panels"] if p["type"] != "row"]
    exprs = " ".join(t["expr"] for p in panels for t in p["targets"])
    for metric in (
        "isoflop_train_loss_ema",  # training loss per trial over time
        "isoflop_tokens",  # ... and against tokens
        "isoflop_eval_loss",  # final eval loss
        "isoflop_params",  # ... against parameters (the isoFLOP view)
        "isoflop_tokens_per_second",
        "isoflop_mfu",
        "isoflop_operator_trials",  # trials by phase
        'phase="queued"',  # trials waiting in the cluster's queue (Kueue)
        "isoflop_operator_exponent",  # fitted exponents with intervals
        "DCGM_FI_DEV_GPU_UTIL",  # GPU utilisation where DCGM runs
    ):
        assert metric in exprs, metric
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["description"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
            if "isoflop_" in target["expr"] and "reconcile_seconds" not in target["expr"]:
                assert '"$sweep"' in target["expr"], (panel["title"], target["expr"])


def test_layout_has_unique_ids_and_no_overlaps() -> None:
    panels = dashboard()["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for p in panels:
        g = p["gridPos"]
        assert g["x"] >= 0, p["title"]
        assert g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = p["title"]
