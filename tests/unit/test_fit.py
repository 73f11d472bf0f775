"""The fitting library: known laws recovered, intervals that cover the truth, clear errors."""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
import pytest

from isoflop import api
from isoflop.fit import Points, analyze, compare, fit_budget, fit_parametric, read_table
from isoflop.fit.report import format_comparison, format_text, to_result
from tests.unit.synthetic import (
    A_TRUE,
    ALPHA,
    BETA,
    DECAY_TRUE,
    A,
    B,
    E,
    paper_rows,
    surface_rows,
)

# -- known laws ----------------------------------------------------------------------------------


def test_paper_laws_are_recovered_from_exact_minima() -> None:
    a = analyze(Points.from_rows(paper_rows()), method="parabola", bootstrap=0)
    laws = a.laws
    assert f"{laws['params'].exponent:.4g}" == "0.5681"
    assert f"{laws['tokens'].exponent:.4g}" == "0.4319"
    assert f"{laws['loss'].exponent:.3g}" == "-0.0273"
    assert laws["params"].coefficient == pytest.approx(0.0009, rel=1e-6)
    assert laws["loss"].coefficient == pytest.approx(2.3943, rel=1e-6)
    assert laws["tokens"].coefficient == pytest.approx(1 / (6 * 0.0009), rel=1e-6)
    for f in a.budget_fits:
        assert f.bracketed
        assert f.params_opt == pytest.approx(0.0009 * f.budget**0.5681, rel=1e-9)
        assert f.tokens_opt == pytest.approx(f.budget / (6 * f.params_opt), rel=1e-9)


def test_surface_parameters_fall_in_the_reported_intervals() -> None:
    a = analyze(Points.from_rows(surface_rows()), bootstrap=200, seed=0, irreducible=True)
    # parabola method: the compute-optimal exponents
    assert A_TRUE in a.laws["params"].exponent_ci
    assert 1 - A_TRUE in a.laws["tokens"].exponent_ci
    assert a.laws["params"].exponent == pytest.approx(A_TRUE, abs=0.02)
    # L*(C) has an irreducible floor: the saturating law finds it (three parameters from six
    # budgets are weakly identified, so this checks closeness, not interval coverage)
    assert a.loss_saturating is not None
    assert a.loss_saturating.irreducible == pytest.approx(E, rel=0.1)
    assert a.loss_saturating.decay == pytest.approx(DECAY_TRUE, rel=0.2)
    # parametric method: every parameter of the surface
    f = a.parametric
    assert f is not None
    for name, true in {"E": E, "A": A, "B": B, "alpha": ALPHA, "beta": BETA}.items():
        interval = f.intervals[name]
        assert interval is not None
        assert true in interval, f"{name}={true} not in {interval}"
    assert A_TRUE in f.intervals["params_exponent"]
    assert f.params_exponent + f.tokens_exponent == pytest.approx(1.0)
    n, d, loss = f.optimum(1e21)
    assert float(n) * float(d) * f.flops_per_param_token == pytest.approx(1e21)
    assert float(loss) == pytest.approx(float(f.loss(n, d)))


def test_intervals_narrow_with_less_noise_and_are_seeded() -> None:
    noisy = analyze(Points.from_rows(surface_rows(noise=0.01)), method="parabola", bootstrap=300)
    quiet = analyze(Points.from_rows(surface_rows(noise=0.001)), method="parabola", bootstrap=300)
    wide, narrow = noisy.laws["params"].exponent_ci, quiet.laws["params"].exponent_ci
    assert wide is not None
    assert narrow is not None
    assert narrow.width < wide.width / 3
    pts = Points.from_rows(surface_rows())
    same = [analyze(pts, method="parabola", bootstrap=100, seed=7).laws["params"] for _ in (1, 2)]
    assert same[0].exponent_ci == same[1].exponent_ci
    other = analyze(pts, method="parabola", bootstrap=100, seed=8).laws["params"]
    assert other.exponent_ci != same[0].exponent_ci
    assert other.exponent == same[0].exponent  # the point estimate does not depend on the seed


def test_metric_laws_at_the_optimum_and_against_loss() -> None:
    rows = paper_rows()
    for r in rows:
        dx = np.log10(r["params"] / (0.0009 * r["budget"] ** 0.5681))
        r["fid"] = 2.2566e6 * r["budget"] ** -0.234 * 10 ** (0.3 * dx**2)  # minimum at N*
        r["vlb"] = 3.0 * r["loss"] ** 2.5
    a = analyze(Points.from_rows(rows), method="parabola", bootstrap=100)
    assert a.metric_laws["fid"].exponent == pytest.approx(-0.234, rel=1e-6)
    assert a.metric_laws["fid"].coefficient == pytest.approx(2.2566e6, rel=1e-6)
    assert a.metric_vs_loss["vlb"].exponent == pytest.approx(2.5, rel=1e-9)
    assert a.metric_vs_loss["vlb"].coefficient == pytest.approx(3.0, rel=1e-9)
    pred = analyze(Points.from_rows(rows), method="parabola", bootstrap=100, predict=[1e21])
    assert pred.predictions[0].metrics["fid"].value == pytest.approx(2.2566e6 * 1e21**-0.234)


# -- flags and advice ------------------------------------------------------------------------------


def test_unbracketed_and_flat_budgets_are_flagged_with_advice() -> None:
    n = np.array([1e6, 2e6, 4e6, 8e6])
    falling = fit_budget(1e17, n, 1e17 / (6 * n), np.array([3.0, 2.8, 2.7, 2.65]))
    assert not falling.bracketed
    assert falling.advice == "the minimum lies above the largest model: add larger rungs"
    rising = fit_budget(1e17, n, 1e17 / (6 * n), np.array([2.65, 2.7, 2.8, 3.0]))
    assert rising.advice == "the minimum lies below the smallest model: add smaller rungs"
    flat = fit_budget(1e17, n, 1e17 / (6 * n), np.array([2.5, 2.7, 2.7, 2.5]))
    assert not flat.bracketed
    assert np.isnan(flat.loss_opt)
    assert "widen it on both sides" in flat.advice
    # a straight line with a rounding-level upward curve has its vertex absurdly far away
    line = fit_budget(1e17, n, 1e17 / (6 * n), 3.0 - 0.1 * np.log10(n) + 1e-12 * np.log10(n) ** 2)
    assert np.isnan(line.params_opt)
    assert "barely curves" in line.advice


def test_a_flat_budget_is_left_out_of_the_laws_with_a_warning() -> None:
    rows = paper_rows()
    for r in rows:
        if r["budget"] == 1e17:  # concave: no minimum
            r["loss"] = 3.0 - 0.01 * (np.log10(r["params"] / (0.0009 * 1e17**0.5681))) ** 2
    a = analyze(Points.from_rows(rows), method="parabola", bootstrap=100)
    assert any(w.startswith("budget 1e+17:") for w in a.warnings)
    assert a.laws["params"].points == 5
    assert f"{a.laws['params'].exponent:.4g}" == "0.5681"


def test_exact_accounting_uses_the_sweeps_own_flops_per_token() -> None:
    # With k = 4.5 FLOPs per parameter-token instead of 6, D* = C / (4.5 N*).
    rows = paper_rows()
    for r in rows:
        r["tokens"] = r["budget"] / (4.5 * r["params"])
    f = analyze(Points.from_rows(rows), method="parabola", bootstrap=0).budget_fits[0]
    assert f.tokens_opt == pytest.approx(f.budget / (4.5 * f.params_opt), rel=1e-9)


# -- predictions, hold-out, comparison -------------------------------------------------------------


def test_predictions_keep_confidence_and_prediction_intervals_apart() -> None:
    a = analyze(
        Points.from_rows(surface_rows(noise=0.01)),
        method="parabola",
        bootstrap=300,
        predict=[1e21, 1e22],
    )
    for p in a.predictions:
        for est, law in ((p.params, a.laws["params"]), (p.loss, a.laws["loss"])):
            assert est is not None
            assert est.ci is not None
            assert est.pi is not None
            assert est.value == pytest.approx(float(law(p.budget)))
            assert est.pi.low <= est.ci.low <= est.value <= est.ci.high <= est.pi.high
            assert est.pi.width > est.ci.width
    far, near = a.predictions[1].params, a.predictions[0].params
    assert far is not None
    assert near is not None
    assert far.ci is not None
    assert near.ci is not None
    assert far.ci.width / far.value > near.ci.width / near.value  # extrapolation widens


def test_hold_out_of_exact_laws_predicts_the_largest_budget() -> None:
    a = analyze(
        Points.from_rows(paper_rows()), method="parabola", bootstrap=100, hold_out="largest"
    )
    h = a.holdout
    assert h is not None
    assert h.budget == 6e18
    assert abs(h.params_error) < 1e-9
    assert abs(h.loss_error) < 1e-9


def test_hold_out_reports_extrapolation_error_on_a_saturating_loss() -> None:
    a = analyze(Points.from_rows(surface_rows()), method="parabola", bootstrap=200, hold_out=3e20)
    h = a.holdout
    assert h is not None
    assert h.loss_error < 0  # a pure power law undershoots a loss that flattens towards E
    assert h.predicted.loss is not None
    assert h.predicted.loss.value == pytest.approx(h.observed_loss * (1 + h.loss_error))


def test_comparison_of_in_context_and_cross_attention() -> None:
    ic = analyze(Points.from_rows(paper_rows(noise=3e-4, seed=1)), method="parabola", bootstrap=300)
    ca = analyze(
        Points.from_rows(paper_rows(n_coef=0.003, n_exp=0.54, l_exp=-0.0385, noise=3e-4, seed=2)),
        method="parabola",
        bootstrap=300,
    )
    c = compare(ic, ca)
    params, tokens, _ = c.differences
    assert params.difference == pytest.approx(0.5681 - 0.54, abs=0.005)
    assert params.significant
    assert params.ci is not None
    assert params.ci.low > 0
    assert tokens.difference < 0
    assert c.more_data == "second"  # cross-attention puts more of extra compute into data
    text = format_comparison(c, "in-context", "cross-attention")
    assert "cross-attention allocates more of extra compute to data" in text
    # two sweeps of one law: a D* difference within the noise names neither
    again = analyze(
        Points.from_rows(paper_rows(noise=3e-4, seed=3)), method="parabola", bootstrap=300
    )
    same = compare(ic, again)
    assert not same.differences[1].significant
    assert same.more_data == "neither"
    assert "Neither puts measurably more" in format_comparison(same, "a", "b")


# -- degenerate input ------------------------------------------------------------------------------


def rows_with(**change: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = paper_rows()
    index = change.pop("row", 0)
    rows[index] = {**rows[index], **change}
    return rows


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            [r for r in paper_rows() if r["budget"] == 1e17],
            "scaling laws need at least 2 budgets, got 1 (1e+17)",
        ),
        (
            [r for r in paper_rows(sizes=2)],
            "scaling laws need at least 2 budgets with a minimum inside the ladder, got 0: fewer "
            "than the 3 model sizes a parabola needs at 1e+17 (2), 3e+17 (2), 6e+17 (2)",
        ),
        (rows_with(loss=float("nan")), "row 1: loss is nan, not a finite number"),
        (rows_with(row=3, params=0.0), "row 4: params must be positive, got 0"),
        (rows_with(row=2, tokens=-5.0), "row 3: tokens must be positive, got -5"),
        ([], "no trial results to fit"),
    ],
)
def test_degenerate_input_is_a_value_error_naming_the_problem(
    rows: list[dict[str, Any]], message: str
) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        analyze(Points.from_rows(rows), method="parabola", bootstrap=100)


def test_parametric_and_options_validate_their_input() -> None:
    few = Points.from_rows(paper_rows()[:5])
    with pytest.raises(ValueError, match="needs at least 6 trials, got 5"):
        fit_parametric(few)
    pts = Points.from_rows(paper_rows())
    with pytest.raises(ValueError, match="method must be parabola, parametric or both"):
        analyze(pts, method="cubic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="confidence must lie in"):
        analyze(pts, confidence=1.5)
    with pytest.raises(ValueError, match="hold-out budget 5e\\+17 is not one of the budgets"):
        analyze(pts, method="parabola", bootstrap=0, hold_out=5e17)
    with pytest.raises(ValueError, match="missing column 'loss'"):
        Points.from_rows([{"budget": 1, "params": 2, "tokens": 3}])
    with pytest.raises(ValueError, match="row 2: loss is 'abc', not a number"):
        Points.from_rows(
            [
                {"budget": 1, "params": 2, "tokens": 3, "loss": 1},
                {"budget": 1, "params": 3, "tokens": 3, "loss": "abc"},
            ]
        )


# -- tables and status -----------------------------------------------------------------------------


def test_tables_read_csv_and_json_with_aliases_and_metrics(tmp_path: Any) -> None:
    csv_path = tmp_path / "t.csv"
    csv_path.write_text(
        "id,Budget,N,data,loss,fid,phase\n"
        "a,1e17,1e6,1.6e10,0.5,30,Succeeded\n"
        "b,1e17,2e6,0.8e10,0.49,29,Succeeded\n"
    )
    p = read_table(csv_path)
    assert p.params.tolist() == [1e6, 2e6]
    assert p.tokens.tolist() == [1.6e10, 0.8e10]
    assert sorted(p.metrics) == ["fid"]
    json_path = tmp_path / "t.json"
    json_path.write_text(
        json.dumps({"trials": [{"budget": 1e17, "params": 1e6, "tokens": 1.6e10, "loss": 0.5}]})
    )
    assert len(read_table(json_path)) == 1
    with pytest.raises(ValueError, match="cannot read"):
        read_table(tmp_path / "missing.csv")
    (tmp_path / "bad.json").write_text("[{]")
    with pytest.raises(ValueError, match="is not valid JSON"):
        read_table(tmp_path / "bad.json")


def test_analysis_becomes_a_status_fit_result() -> None:
    a = analyze(Points.from_rows(surface_rows()), bootstrap=100, predict=[1e21], hold_out="largest")
    result = to_result(a)
    wire = result.to_wire()
    assert api.FitResult.model_validate(wire) == result
    assert wire["laws"]["params"]["exponent"] == a.laws["params"].exponent
    assert wire["parametric"]["E"] == pytest.approx(a.parametric.E if a.parametric else 0)
    assert set(wire["predictions"][0]["params"]) == {"value", "confidence", "prediction"}
    assert wire["holdOut"]["budget"] == 3e20
    status = api.ScalingSweepStatus(fit=result)
    assert len(status.model_dump_json(by_alias=True, exclude_none=True)) < 20_000
    text = format_text(a)
    assert "N*(C)" in text
    assert "Hold-out check: fitted without 3e20" in text
    assert "Parametric fit" in text
