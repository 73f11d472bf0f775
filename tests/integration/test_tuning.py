"""`isoflop run` with a tuning stage, on losses simulated with a known learning-rate optimum: the
laws of the model at its best rates, not of one fixed rate."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from isoflop import api
from tests.integration.test_run import ROOT, isoflop

# the paper's surface moved so that the quickstart's ladder brackets its optima, and a known
# optimum rate per (N, D) of Step Law's form
SURFACE = "0.58984,28.56,34.222,0.2,0.26307"
RATES = (0.4, -0.713, 0.307, 0.2)
# and a known optimum batch B*(D) = 0.05 D^0.5: 4-16 at the stage's rungs, up to 47 on the grid
BATCHES = (0.05, 0.5, 0.1)


def quickstart(tmp_path: Path, name: str, **spec: Any) -> Path:
    m = api.yaml_load((ROOT / "examples" / "quickstart.yaml").read_text())
    m["spec"].update(spec)
    m["spec"]["fit"] = {"bootstrap": 200, "method": "parabola"}
    path = tmp_path / f"{name}.yaml"
    path.write_text(json.dumps(m))
    return path


def simulate(
    manifest: Path, run_dir: Path, rates: bool = True, batches: bool = False
) -> dict[str, Any]:
    basin = ["--rates", ",".join(map(str, RATES))] if rates else []
    basin += ["--batches", ",".join(map(str, BATCHES))] if batches else []
    cmd = isoflop("run", str(manifest), "--simulate", "--law", SURFACE, *basin, "--plain",
                  "--run-dir", str(run_dir))  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    return dict(json.loads((run_dir / "status.json").read_text()))


def exponent(status: dict[str, Any]) -> float:
    return float(status["fit"]["laws"]["params"]["exponent"])


def test_the_stage_removes_the_fixed_rates_bias_and_its_law_holds_the_true_exponents(
    tmp_path: Path,
) -> None:
    ideal = exponent(simulate(quickstart(tmp_path, "ideal"), tmp_path / "ideal", rates=False))
    fixed = exponent(simulate(quickstart(tmp_path, "fixed"), tmp_path / "fixed"))
    tuned_dir = tmp_path / "tuned"
    status = simulate(quickstart(tmp_path, "tuned", tuning={}), tuned_dir)
    tuned = exponent(status)
    # at one rate for all, the exponent is the rate's; at the law's rates, the grid's own
    assert abs(fixed - ideal) > 0.08, (fixed, ideal)
    assert abs(tuned - ideal) < 0.03, (tuned, ideal)

    tuning = status["tuning"]
    assert tuning["phase"] == "Tuned"
    assert tuning["gridFraction"] < 0.2  # the stage's extra compute
    law = tuning["law"]
    assert law["form"] == "params-tokens"
    for name, true in (("params", RATES[1]), ("tokens", RATES[2])):
        ci = law[f"{name}ExponentInterval"]
        assert ci["low"] <= true <= ci["high"], (name, ci)
    records = status["trials"]
    grid = [r for r in records if r.get("kind") is None and r["phase"] == "Succeeded"]
    assert len(grid) == 36
    assert len({r["learningRate"] for r in grid}) > 20  # a rate per (N, D)
    report = (tuned_dir / "report.md").read_text()
    assert "## Learning-rate tuning" in report
    assert "| 3e10 | d2w64 | 186,672 | 44,928 |" in report
    assert (tuned_dir / "plots" / "rates.png").stat().st_size > 10_000

    # resumed: nothing trains again, the same law
    again = simulate(quickstart(tmp_path, "tuned", tuning={}), tuned_dir)
    assert again["tuning"]["law"] == law
    assert [r["attempts"] for r in again["trials"]] == [r["attempts"] for r in records]


def test_a_stage_at_the_edge_of_its_grid_stops_the_run_with_the_wider_grid(
    tmp_path: Path,
) -> None:
    rates = {"learningRates": [1e-6, 2e-6, 4e-6], "widen": 1}
    manifest = quickstart(tmp_path, "low", tuning=rates)
    basin = ",".join(map(str, RATES))
    cmd = isoflop("run", str(manifest), "--simulate", "--law", SURFACE, "--rates", basin,
                  "--plain", "--run-dir", str(tmp_path / "low"))  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 1, out.stderr[-2000:]
    status = json.loads((tmp_path / "low" / "status.json").read_text())
    assert status["phase"] == "Failed"
    assert status["tuning"]["phase"] == "Failed"
    message = status["tuning"]["message"]
    assert "at the grid's upper edge (8e-06) after widening 1 step(s)" in message
    assert message.endswith("give spec.tuning.learningRates [4e-06, 8e-06, 1.6e-05]")
    assert message in out.stdout
    assert not any(r.get("kind") is None and r["attempts"] for r in status["trials"])


def test_a_stage_with_batch_sizes_finds_the_batch_law_and_trains_the_grid_at_its_batches(
    tmp_path: Path,
) -> None:
    tuning = {"globalBatchSizes": [4, 8, 16, 32]}
    run_dir = tmp_path / "batches"
    status = simulate(quickstart(tmp_path, "b", tuning=tuning), run_dir, batches=True)
    stage = status["tuning"]
    assert stage["phase"] == "Tuned", stage["message"]
    law = stage["batchLaw"]
    assert law["form"] == "tokens"
    ci = law["tokensExponentInterval"]
    assert ci["low"] <= BATCHES[1] <= ci["high"], ci
    assert abs(law["tokensExponent"] - BATCHES[1]) < 0.15
    grid = [r for r in status["trials"] if r.get("kind") is None and r["phase"] == "Succeeded"]
    assert len(grid) == 36
    sizes = {r["globalBatchSize"] for r in grid}
    assert len(sizes) > 4  # a batch per D
    assert max(sizes) > 16 >= min(sizes) - 8  # around the basin's 8-47, not the spec's 16
    batch_trials = [r for r in status["trials"] if "-bs" in r["id"] and r["attempts"]]
    assert batch_trials
    rates = {(g["budget"], g["rung"]): g["bestLearningRate"] for g in stage["groups"]}
    assert all(r["learningRate"] for r in batch_trials)  # at its rung's best rate
    assert all(
        r["learningRate"] == pytest.approx(rates[(float(r["id"].split("-")[1].replace("p", ".")),
                                                  r["id"].split("-")[2])], rel=5e-3)
        for r in batch_trials
    )  # fmt: skip
    report = (run_dir / "report.md").read_text()
    assert "- batch law (tokens, 6 optima): B* = " in report
    assert "| batches tried | best batch |" in report


@pytest.mark.parametrize("bad", ["1,2,3", "step,1", "0,1,1,1"])
def test_bad_rate_basins_are_one_sentence(tmp_path: Path, bad: str) -> None:
    manifest = quickstart(tmp_path, "q", tuning={})
    cmd = isoflop("run", str(manifest), "--simulate", "--rates", bad, "--run-dir",
                  str(tmp_path / "r"))  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 2
    assert out.stderr.strip().startswith("isoflop: error: --rates")


def test_forecast_compares_the_batch_ways_before_anything_trains(tmp_path: Path) -> None:
    manifest = quickstart(tmp_path, "f")
    cmd = isoflop("forecast", str(manifest), "--runs", "6", "--no-variants", "--law", SURFACE,
                  "--batches", "centred")  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-2000:]

    def bias(way: str) -> float:
        found = re.search(rf"^  {re.escape(way)}\s+([+-][0-9.]+)", out.stdout, re.MULTILINE)
        assert found, out.stdout
        return float(found.group(1))

    fixed, both = bias("one rate and batch"), bias("the stage on rates, then batches")
    assert fixed < -0.05  # one batch for all pulls the exponent down
    assert abs(both) < 0.06
    assert "the batch law's D exponent: bias" in out.stdout
    bad = subprocess.run(
        isoflop("forecast", str(manifest), "--batches", "1,2"), capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr.strip().startswith("isoflop: error: --batches takes 'step' or three")
