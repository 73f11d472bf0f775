"""A class family on one machine: `isoflop run`, `plan` and `validate` measure its rungs in the
trainer's environment (once per run directory), plan from the measures, and name a rung the class
refuses in one sentence; an SD3 sweep trains for real and fits laws with intervals."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from isoflop import api
from isoflop.cli import main
from isoflop.local import modelcheck
from isoflop.local.backends import SimulatedBackend
from isoflop.local.modelcheck import CACHE, model_checked
from isoflop.local.runner import Display, Run
from isoflop.sweep.families import class_configs
from isoflop.sweep.forecast import Law
from isoflop.sweep.plan import plan

ROOT = Path(__file__).resolve().parents[2]
SD3 = ROOT / "examples" / "quickstart-sd3.yaml"


def sd3(**spec: Any) -> api.ScalingSweep:
    obj = api.load_sweep(SD3).to_wire()
    obj["spec"].update(spec)
    return api.parse_sweep(obj)


def test_the_rungs_are_measured_once_per_run_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = sd3().spec
    said: list[str] = []
    checked = model_checked(spec, tmp_path / CACHE, said.append)
    assert len(said) == 1
    assert "9 rungs of SD3Transformer2DModel built and counted" in said[0]
    p = plan(checked)
    by_rung = {t.rung: t.params for t in p.trials}
    table = checked.model.measures
    for name, cfg in class_configs(spec):  # the plan sizes each rung by its own measure
        assert by_rung[name] == table[cfg.digest()].params
    assert by_rung["d2w40"] < by_rung["d2w128"]

    def never(requests: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("checked again")

    monkeypatch.setattr(modelcheck, "run_check", never)
    again = model_checked(spec, tmp_path / CACHE, said.append)  # the same rungs: from the file
    assert again.model.measures == table
    assert len(said) == 1
    finer = sd3(model={**sd3().to_wire()["spec"]["model"], "arguments": {"patch_size": 2}}).spec
    with pytest.raises(AssertionError, match="checked again"):  # other rungs: checked anew
        model_checked(finer, tmp_path / CACHE)


def test_a_refused_rung_and_a_check_that_cannot_run_are_one_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    obj = api.load_sweep(SD3).to_wire()
    obj["spec"]["model"]["configs"] = obj["spec"]["model"]["configs"][:3]
    obj["spec"]["model"]["configs"][1]["arguments"] = {"num_layer": 3}
    manifest = tmp_path / "typo.yaml"
    manifest.write_text(json.dumps(obj))
    for command in (["validate", "--no-data"], ["plan"], ["run", "--simulate"]):
        assert main([*command, str(manifest)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(
            "isoflop: error: spec.model.configs[1] ('d2w48'): SD3Transformer2DModel takes no "
            "argument 'num_layer' (it takes sample_size, patch_size, "
        ), err
        assert err.count("\n") == 1
    monkeypatch.setattr(sys, "executable", "/bin/false")
    with pytest.raises(api.ManifestError, match="the model check could not run in this envi"):
        model_checked(sd3().spec)


def test_the_paper_grid_with_sd3_recovers_a_simulated_law_from_its_measures(
    tmp_path: Path,
) -> None:
    sweep = api.load_sweep(ROOT / "examples" / "paper-sd3.yaml")
    fit = sweep.spec.fit.model_copy(update={"bootstrap": 200, "method": "parabola"})
    spec = model_checked(sweep.spec.model_copy(update={"fit": fit}))
    law = Law()
    run = Run(sweep.model_copy(update={"spec": spec}), tmp_path, SimulatedBackend(law, seed=0))
    assert run.run(Display(stream=io.StringIO(), live=False)).phase == "Succeeded"
    status = json.loads((tmp_path / "status.json").read_text())
    interval = status["fit"]["laws"]["params"]["exponentInterval"]
    assert interval["low"] <= law.params_exponent <= interval["high"]
    table = spec.model.measures
    sizes = {cfg.digest(): table[cfg.digest()].params for _, cfg in class_configs(spec)}
    assert {t["params"] for t in status["trials"]} <= set(sizes.values())
    check = status["modelCheck"]  # the status as the operator writes it, measures included
    assert check["ready"] is True
    assert len(check["rungs"]) == 14
    assert check["rungs"]["d02"]["params"] == min(sizes.values())


def test_an_sd3_sweep_trains_on_cpu_from_isoflop_run(tmp_path: Path) -> None:
    obj = api.load_sweep(SD3).to_wire()
    obj["spec"]["model"]["configs"] = obj["spec"]["model"]["configs"][:3]
    obj["spec"]["budgets"] = [1e10, 2e10]
    obj["spec"]["training"]["minSteps"] = 10
    obj["spec"]["training"]["evalSamples"] = 64
    obj["spec"]["fit"] = {"bootstrap": 100}
    manifest = tmp_path / "sd3.yaml"
    manifest.write_text(json.dumps(obj))
    directory = tmp_path / "run"
    assert main(["run", str(manifest), "--run-dir", str(directory), "--plain"]) == 0
    status = json.loads((directory / "status.json").read_text())
    trials = status["trials"]
    assert len(trials) == 6
    assert all(t["phase"] == "Succeeded" for t in trials)
    checked = json.loads((directory / CACHE).read_text())["verdict"]["rungs"]
    for t in trials:  # each trial's model is the one its rung's check measured
        result = json.loads((directory / "trials" / t["id"] / "result.json").read_text())
        rung = t["id"].split("-", 1)[1]  # BUDGET-RUNG
        assert result["params"] == t["params"] == checked[rung]["measure"]["params"]
        assert 0 < result["eval_loss"] < 2
