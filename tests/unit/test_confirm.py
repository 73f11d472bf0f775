"""spec.confirm: its rules, the model it chooses, the engine's order (never before the final
fit), the prediction's interval and the verdict."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from isoflop import api
from isoflop.fit import Points, analyze
from isoflop.fit.confirmation import Drift, extrapolation_check, half_widths, predict_loss
from isoflop.fit.stats import Interval, Predicted
from isoflop.local.backends import SimulatedBackend
from isoflop.local.runner import Display, Run
from isoflop.sweep.confirm import (
    choose,
    confirm_id,
    law_optimum,
    plan_confirmations,
    shapes,
    trial_of,
    verdict,
)
from isoflop.sweep.engine import TrialState, decide
from isoflop.sweep.forecast import Law
from isoflop.sweep.plan import Infeasible, plan
from isoflop.sweep.status import results_table, sweep_status

ROOT = Path(__file__).resolve().parents[2]


def manifest(name: str = "quickstart") -> dict[str, Any]:
    return api.yaml_load((ROOT / "examples" / f"{name}.yaml").read_text())


def refused(m: dict[str, Any]) -> str:
    with pytest.raises(api.ManifestError) as err:
        api.parse_sweep(m)
    return str(err.value)


def test_a_confirm_budget_inside_the_grid_or_without_a_surface_is_refused_with_a_sentence() -> None:
    m = manifest()
    m["spec"]["confirm"] = [1e11]
    assert "above every budget of the grid" in refused(m)
    assert "1e+11 is not above 2.4e+11" in refused(m)
    m["spec"]["confirm"] = [1e12]
    m["spec"]["fit"]["method"] = "parabola"
    assert "fit.method must be parametric or both" in refused(m)
    m["spec"]["fit"]["method"] = "both"
    assert api.parse_sweep(m).spec.confirm == [1e12]


def test_configs_without_a_shape_rule_need_explicit_shapes() -> None:
    m = manifest()
    m["spec"]["confirm"] = [1e12]
    m["spec"]["model"]["configs"][0]["depth"] = 3  # neither one depth nor one ratio now
    assert "give spec.confirmation.shapes" in refused(m)
    m["spec"]["confirmation"] = {"shapes": [{"depth": 3, "width": 100, "heads": 3}]}
    assert "does not split into 3 heads" in refused(m)
    m["spec"]["confirmation"] = {"shapes": [{"depth": 3, "width": 96}, {"depth": 4, "width": 128}]}
    spec = api.parse_sweep(m).spec
    assert [(r.config.depth, r.config.width) for r in shapes(spec)] == [(3, 96), (4, 128)]


def test_the_shape_rule_extends_the_ladder() -> None:
    paper = api.parse_sweep(manifest("paper-in-context")).spec
    rungs = shapes(paper)
    assert all(r.config.width == 64 * r.config.depth for r in rungs)
    assert [r.config.depth for r in rungs] == list(range(1, 129))
    quick = api.parse_sweep(manifest()).spec  # depth 2, widths 40..128 in steps of headDim 8
    widths = [r.config.width for r in shapes(quick)]
    assert all(r.config.depth == 2 for r in shapes(quick))
    assert widths[:3] == [8, 16, 24]
    assert all(w % 8 == 0 for w in widths)
    ratio = manifest()
    ratio["spec"]["model"]["configs"] = [
        {"name": f"d{d}", "depth": d, "width": 16 * d} for d in (2, 3, 4, 5)
    ]
    got = shapes(api.parse_sweep(ratio).spec)
    assert all(r.config.width == 16 * r.config.depth for r in got)
    assert len(got) == 128


def test_the_paper_grid_confirms_near_the_papers_958m_model_at_1p5e21() -> None:
    spec = api.parse_sweep(manifest("paper-in-context")).spec.model_copy(
        update={"confirm": [1.5e21]}
    )
    (c,) = plan_confirmations(spec, Law())
    # the paper's N* = 0.0009 C^0.5681 at 1.5e21 (6ND accounting): 964.7M
    assert c.n_star == pytest.approx(0.0009 * 1.5e21**0.5681, rel=0.01)
    assert not isinstance(c.trial, Infeasible)
    assert c.trial.width == 64 * c.trial.depth
    assert abs(math.log(c.trial.params / 958.3e6)) < math.log(1.10)  # within 10% of 958.3M
    assert c.trial.steps * c.trial.batch_size * c.trial.flops_per_sample == c.trial.flops
    assert c.trial.flops == pytest.approx(1.5e21, rel=1e-5)  # 6ND: the budget is spent
    assert c.trial.id == confirm_id(1.5e21) == "confirm-1p5e21"


def test_the_optimum_of_a_known_law_follows_its_exponent() -> None:
    spec = api.parse_sweep(manifest("paper-in-context")).spec
    a, b = law_optimum(spec, 1e20, Law()), law_optimum(spec, 1e22, Law())
    assert math.log10(b / a) / 2 == pytest.approx(Law().params_exponent, abs=1e-3)


def test_n_star_beyond_the_family_is_said_and_the_edge_model_is_chosen() -> None:
    spec = api.parse_sweep(manifest()).spec
    trial, note = choose(spec, 1e12, 10.0)  # far below the smallest model of the rule
    assert not isinstance(trial, Infeasible)
    assert trial.width == 8
    assert note is not None
    assert "beyond the smallest model" in note
    _, none = choose(spec, 1e12, float(trial.params))
    assert none is None


def grid_spec(**kw: Any) -> api.ScalingSweepSpec:
    m = manifest()
    m["spec"].update({"confirm": [1e12], "parallelism": 4, **kw})
    return api.parse_sweep(m).spec


def finished(spec: api.ScalingSweepSpec) -> dict[str, TrialState]:
    law = Law(0.3, 20.0, 30.0, 0.3, 0.3)
    return {
        t.id: TrialState("Succeeded", 1, float(law(t.params, t.tokens))) for t in plan(spec).trials
    }


def stored(spec: api.ScalingSweepSpec, states: dict[str, TrialState]) -> api.Confirmation:
    trial, _ = choose(spec, 1e12, 3e5)
    assert not isinstance(trial, Infeasible)
    return api.Confirmation(
        budget=1e12, trial=trial.id, predicted_params=3e5, depth=trial.depth, width=trial.width,
        heads=trial.heads, params=trial.params, tokens=trial.tokens, steps=trial.steps,
        predicted_loss=0.5, loss_interval=api.Interval(low=0.49, high=0.51),
    )  # fmt: skip


def test_the_engine_confirms_only_after_the_final_fit_and_the_stored_prediction() -> None:
    spec = grid_spec()
    p = plan(spec)
    states = finished(spec)
    budgets = tuple(sorted(spec.budgets))
    # the grid is done but not fitted: a fit, no confirmation
    d = decide(spec, p, states)
    assert d.fit_due
    assert d.phase == "Fitting"
    assert not d.confirm_due
    assert not d.launches
    # interim trials still running: never a confirmation, whatever was fitted
    running = {**states, p.trials[-1].id: TrialState("Running", 1)}
    d = decide(spec, p, running, budgets[:3])
    assert not d.confirm_due
    assert all(not x.trial.id.startswith("confirm-") for x in d.launches)
    # fitted: predict first (the driver stores it), launch nothing yet
    d = decide(spec, p, states, budgets)
    assert (d.phase, d.confirm_due, d.launches) == ("Confirming", True, ())
    # stored: its launch, then it runs, then the sweep is done
    c = stored(spec, states)
    d = decide(spec, p, states, budgets, [c])
    assert d.phase == "Confirming"
    assert not d.confirm_due
    assert [x.trial.id for x in d.launches] == ["confirm-1e12"]
    assert d.launches[0].attempt == 1
    assert d.launches[0].trial == trial_of(spec, c)
    for phase in ("Starting", "Running"):  # its own: never cancelled as an old plan's trial
        states["confirm-1e12"] = TrialState(phase, 1)  # type: ignore[arg-type]
        d = decide(spec, p, states, budgets, [c])
        assert (d.phase, d.reason, d.launches, d.cancels) == ("Confirming", "Confirming", (), ())
    states["confirm-1e12"] = TrialState("Succeeded", 1, 0.503)
    d = decide(spec, p, states, budgets, [c])
    assert d.phase == "Succeeded"
    status = sweep_status(spec, p, states, d, None, budgets, confirmations=[c])
    (got,) = status.confirmations
    assert got.measured_loss == 0.503
    assert got.inside is True
    assert got.half_widths == pytest.approx(0.3)
    cond = next(x for x in status.conditions if x.type == "Confirmed")
    assert (cond.status, cond.reason) == ("True", "Inside")
    assert "measured 0.5030, predicted 0.5000 [0.4900, 0.5100]: inside" in cond.message


def test_a_failing_confirmation_is_retried_then_reported_and_the_laws_stand() -> None:
    spec = grid_spec()
    p = plan(spec)
    states = finished(spec)
    budgets = tuple(sorted(spec.budgets))
    c = stored(spec, states)
    states["confirm-1e12"] = TrialState("Failed", 1, error="out of memory")
    d = decide(spec, p, states, budgets, [c])
    assert [(x.trial.id, x.attempt) for x in d.launches] == [("confirm-1e12", 2)]
    states["confirm-1e12"] = TrialState("Failed", 1 + spec.retries.per_trial, error="oom")
    d = decide(spec, p, states, budgets, [c])
    assert d.phase == "Succeeded"
    assert not d.launches
    status = sweep_status(spec, p, states, d, None, budgets, confirmations=[c])
    cond = next(x for x in status.conditions if x.type == "Confirmed")
    assert (cond.status, cond.reason) == ("False", "ConfirmationFailed")
    assert status.confirmations[0].phase == "Failed"


def test_the_verdict_counts_half_widths_on_the_measurements_side() -> None:
    spec = grid_spec()
    c = stored(spec, finished(spec)).model_copy(
        update={"loss_interval": api.Interval(low=0.48, high=0.51)}
    )
    below = verdict(c, 0.47, {})
    assert below.inside is False
    assert below.half_widths == pytest.approx(-1.5)
    assert "outside (-1.50 half-widths)" in (below.message or "")
    assert verdict(c, 0.505, {}).half_widths == pytest.approx(0.5)
    bare = verdict(c.model_copy(update={"loss_interval": None}), 0.5, {})
    assert bare.inside is None
    assert "no interval to judge by" in (bare.message or "")
    assert half_widths(0.6, Predicted(0.5, None, Interval(0.4, 0.55))) == pytest.approx(2.0)


def simulated(law: Law, noise: float, seed: int, budgets: list[float]) -> Points:
    spec = api.parse_sweep(manifest("paper-in-context")).spec.model_copy(
        update={"budgets": budgets}
    )
    rng = np.random.default_rng(seed)
    rows = [
        {
            "budget": t.budget,
            "params": float(t.params),
            "tokens": float(t.tokens),
            "loss": float(law(t.params, t.tokens)) * math.exp(noise * rng.standard_normal()),
        }
        for t in plan(spec).trials
    ]
    return Points.from_rows(rows)


def test_the_prediction_holds_the_truth_and_widens_with_one_trials_noise() -> None:
    law = Law()
    points = simulated(law, 0.005, 3, [1e17, 3e17, 6e17, 1e18, 3e18, 6e18])
    a = analyze(points, method="parametric", bootstrap=200, seed=0)
    n = 1e8
    d = 2.4e19 / (6 * n)
    p = predict_loss(a, points, n, d, 2.4e19, seed=0, drift=extrapolation_check(points))
    assert p.predicted.pi is not None
    assert p.predicted.ci is not None
    assert float(law(n, d)) in p.predicted.pi
    assert p.predicted.pi.width > p.predicted.ci.width  # one trial's scatter on top
    assert p.drift is not None
    assert p.drift.decades == pytest.approx(math.log10(2))
    assert p.note is None
    # two budgets: no check of the extrapolation, and it says so
    two = simulated(law, 0.005, 3, [1e17, 1e18])
    b = analyze(two, method="parametric", bootstrap=200, seed=0)
    q = predict_loss(b, two, n, d, 2.4e19, seed=0, drift=extrapolation_check(two))
    assert q.drift is None
    assert "cannot check its own extrapolation" in (q.note or "")
    # no resamples: a value, no interval, and why
    c = analyze(points, method="parametric", bootstrap=0)
    r = predict_loss(c, points, n, d, 2.4e19, drift=None)
    assert r.predicted.pi is None
    assert "fit.bootstrap 0" in (r.note or "")


def test_the_forms_drift_is_what_the_check_holds_beyond_its_noise() -> None:
    assert Drift(0.001, 0.002, 0.3).excess == 0.0
    d = Drift(0.005, 0.003, 0.3)
    assert d.excess == pytest.approx(0.004)
    assert d.at(0.6) == pytest.approx(0.008)
    # a surface of another form than the fit's: its check errs beyond the noise
    bent = Law(0.45, 2.8032, 34.222, 0.2, 0.26307, 0.5)
    points = simulated(bent, 0.0005, 1, [1e17, 3e17, 6e17, 1e18, 3e18, 6e18])
    check = extrapolation_check(points)
    assert check is not None
    assert check.excess > 0


def test_a_simulated_run_confirms_after_its_final_fit_and_keeps_its_prediction(
    tmp_path: Path,
) -> None:
    m = manifest("paper-in-context")
    m["spec"].update({"confirm": [2.4e19]})
    m["spec"]["fit"] = {"method": "both", "bootstrap": 200}
    sweep = api.parse_sweep(m)
    run = Run(sweep, tmp_path, SimulatedBackend(Law(), noise=0.005, seed=0))
    launched: list[str] = []
    original = run.backend.launch

    def spy(trial: Any, *args: Any, **kw: Any) -> None:
        if trial.id.startswith("confirm-"):  # by then: every grid trial finished and fitted
            assert run.state.fitted == tuple(sorted(sweep.spec.budgets))
            assert [c.budget for c in run.state.confirmations] == [2.4e19]
            assert len([t for t in run.state.trials.values() if t.phase == "Succeeded"]) == 84
        launched.append(trial.id)
        original(trial, *args, **kw)

    run.backend.launch = spy  # type: ignore[method-assign]
    decision = run.run(Display(stream=io.StringIO(), live=False))
    assert decision.phase == "Succeeded"
    assert launched.count("confirm-2p4e19") == 1
    assert launched[-1] == "confirm-2p4e19"
    status = json.loads((tmp_path / "status.json").read_text())
    (c,) = status["confirmations"]
    truth = float(Law()(c["params"], c["tokens"]))
    assert c["lossInterval"]["low"] <= truth <= c["lossInterval"]["high"]
    assert c["measuredLoss"] is not None
    assert c["message"].startswith("measured")
    cond = next(x for x in status["conditions"] if x["type"] == "Confirmed")
    assert cond["status"] == ("True" if c["inside"] else "False")
    assert "## Confirmation" in (tmp_path / "report.md").read_text()
    saved = json.loads((tmp_path / "state.json").read_text())["confirmations"][0]
    assert saved["predictedLoss"] == c["predictedLoss"]


def test_forecast_of_the_quickstart_on_the_paper_law_says_where_the_optima_lie(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from isoflop.cli import main

    code = main(["forecast", str(ROOT / "examples" / "quickstart.yaml"), "--runs", "2",
                 "--no-variants"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert "no budget has its loss minimum inside the ladder" in err
    assert "(below the ladder)" in err
    assert "--from" in err
    assert "--law" in err


def test_forecast_simulates_the_confirmation_and_says_what_it_can_tell_apart() -> None:
    from isoflop.sweep.forecast_confirm import format_confirm, simulate_confirm

    spec = api.parse_sweep(manifest("paper-in-context")).spec.model_copy(
        update={"confirm": [2.4e19]}
    )
    (f,) = simulate_confirm(spec, Law(), 0.005, runs=6, bootstrap=100, seed=1)
    assert f.runs == 6
    assert f.decades == pytest.approx(math.log10(4))
    assert 0.005 < f.half_width < 0.03  # one trial's noise (0.5%, 95%: ~1%) and the surface's
    assert abs(f.bias) < 0.01
    assert f.compute_factor == pytest.approx(math.exp(f.half_width / 0.0273), rel=0.15)
    text = format_confirm([f], 6, 0.005)
    assert "at 2.4e19 (0.60 decades above the grid)" in text
    assert "cannot be told from a hit" in text


def test_isoflop_confirm_adds_a_confirmation_to_a_finished_run_without_retraining(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from isoflop.cli import main

    m = manifest("paper-in-context")
    m["spec"]["fit"] = {"method": "both", "bootstrap": 100}
    path = tmp_path / "paper.yaml"
    path.write_text(json.dumps(m))
    run_dir = tmp_path / "run"
    assert main(["run", str(path), "--simulate", "--plain", "--run-dir", str(run_dir)]) == 0
    before = json.loads((run_dir / "state.json").read_text())["trials"]
    capsys.readouterr()
    assert main(["confirm", str(run_dir), "--budget", "1e18", "--simulate", "--plain"]) == 2
    assert "is not above 6e+18" in capsys.readouterr().err
    assert main(["confirm", str(run_dir), "--budget", "2.4e19", "--simulate", "--plain"]) == 0
    out = capsys.readouterr().out
    assert "isoflop: confirmation confirm-2p4e19: measured" in out
    state = json.loads((run_dir / "state.json").read_text())
    assert {k: v for k, v in state["trials"].items() if k in before} == before  # not retrained
    assert state["trials"]["confirm-2p4e19"]["phase"] == "Succeeded"
    assert main(["confirm", str(tmp_path), "--budget", "2.4e19", "--simulate"]) == 2
    assert "holds no sweep.yaml" in capsys.readouterr().err


def test_plan_prints_the_confirmation_model_and_its_gpu_hours(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from isoflop.cli import main

    m = manifest("paper-in-context")
    m["spec"]["confirm"] = [1.5e21]
    path = tmp_path / "sweep.yaml"
    path.write_text(json.dumps(m))
    assert main(["plan", str(path)]) == 0
    out = capsys.readouterr().out
    assert "1.5e21: N* 965M -> depth 23, width 1472: 906M params (905,620,048)" in out
    assert "GPU-hours at 42.1% MFU" in out
    assert main(["plan", str(path), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["confirm"]
    assert row["depth"] == 23
    assert row["gpu_hours"] > 100


def test_a_confirmation_the_laws_cannot_predict_ends_the_sweep_with_the_reason() -> None:
    from isoflop.sweep.confirm import predict

    spec = grid_spec()
    p = plan(spec)
    states = finished(spec)
    budgets = tuple(sorted(spec.budgets))
    points = Points.from_rows(results_table(p, states))
    (no_laws,) = predict(spec, None, points, [1e12])
    assert no_laws.phase == "Infeasible"
    assert "no laws could be fitted" in (no_laws.message or "")
    parabolas = analyze(points, method="parabola", bootstrap=0)
    (no_surface,) = predict(spec, parabolas, points, [1e12])
    assert "no surface L(N, D) was fitted" in (no_surface.message or "")
    d = decide(spec, p, states, budgets, [no_surface])
    assert (d.phase, d.launches, d.confirm_due) == ("Succeeded", (), False)  # no endless wait
    status = sweep_status(spec, p, states, d, None, budgets, confirmations=[no_surface])
    cond = next(x for x in status.conditions if x.type == "Confirmed")
    assert (cond.status, cond.reason) == ("False", "NotPredicted")
    assert "cannot predict it" in cond.message
