"""Intervals that mean what they say: the noise model, local parabolas, what is not identified."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from isoflop import api, cli
from isoflop.fit import Points, analyze, fit_parametric
from isoflop.fit.noise import estimate_noise
from isoflop.fit.parabola import DEFAULT_WINDOW
from isoflop.fit.report import format_text, to_result
from isoflop.sweep.forecast import Law, truth
from isoflop.sweep.plan import plan
from tests.unit.synthetic import A_TRUE, PAPER_BUDGETS, paper_rows, surface_rows

ROOT = Path(__file__).resolve().parents[2]
CROSS_LIKE = Law(0.35, 20.3, 1000.0, 0.33, 0.38)  # steep, asymmetric isoFLOP curves


def paper_grid(law: Law, noise: float = 0.0, seed: int = 0) -> tuple[Points, float]:
    """The paper's in-context grid (6 budgets x 14 depths) drawn from a law, and its true N*
    exponent on that grid."""
    p = plan(api.load_sweep(ROOT / "examples" / "paper-in-context.yaml").spec)
    rng = np.random.default_rng(seed)
    rows = [
        {
            "budget": t.budget,
            "params": float(t.params),
            "tokens": float(t.tokens),
            "loss": float(law(float(t.params), float(t.tokens)))
            * float(np.exp(noise * rng.normal())),
        }
        for t in p.trials
    ]
    return Points.from_rows(rows), truth(p, law).exponents["params"]


def test_three_trials_per_budget_give_no_zero_width_interval() -> None:
    rows = [r for r in paper_rows(noise=0.003, sizes=3)]
    a = analyze(Points.from_rows(rows), method="parabola", bootstrap=200)
    assert a.noise.relative is None  # 3 points, 3 parameters: nothing left to measure noise
    assert a.laws["params"].exponent_ci is None
    assert all(f.params_opt_ci is None for f in a.budget_fits)
    assert "all intervals" in a.not_identified
    assert any("intervals are not identified" in w for w in a.warnings)
    assert "not identified" in format_text(a)
    wire = to_result(a).to_wire()
    assert "exponentInterval" not in wire["laws"]["params"]
    assert wire["noise"]["source"] == "none"
    assert "relative" not in wire["noise"]
    # with the noise known, the same trials give real, nonzero intervals
    known = analyze(Points.from_rows(rows), method="parabola", bootstrap=200, noise=0.003)
    interval = known.laws["params"].exponent_ci
    assert interval is not None
    assert interval.width > 0.01
    assert all(f.params_opt_ci is not None and f.params_opt_ci.width > 0 for f in known.budget_fits)


def test_two_budgets_give_no_prediction_interval() -> None:
    rows = [r for r in paper_rows(noise=0.002, seed=3) if r["budget"] in (1e17, 1e18)]
    a = analyze(Points.from_rows(rows), method="parabola", bootstrap=200, predict=[1e21])
    est = a.predictions[0].params
    assert est is not None
    assert est.ci is not None  # where the law through the two optima lies
    assert est.pi is None  # but nothing says how far a new optimum scatters around it
    assert any("no prediction interval" in w for w in a.warnings)
    three = [r for r in paper_rows(noise=0.002, seed=3) if r["budget"] in (1e17, 1e18, 6e18)]
    b = analyze(Points.from_rows(three), method="parabola", bootstrap=200, predict=[1e21])
    assert b.predictions[0].params is not None
    assert b.predictions[0].params.pi is not None


def test_a_nearly_straight_budget_puts_no_vertex_off_the_ladder() -> None:
    rows = paper_rows(noise=0.0)
    rng = np.random.default_rng(5)
    for r in rows:
        if r["budget"] == 1e17:  # curvature far below the noise: resamples are nearly straight
            dx = np.log10(r["params"] / (0.0009 * 1e17**0.5681))
            r["loss"] = (0.822 + 2e-4 * dx**2) * (1 + 0.004 * rng.normal())
        else:
            r["loss"] *= 1 + 0.001 * rng.normal()
    a = analyze(Points.from_rows(rows), method="parabola", bootstrap=400)
    flat = a.budget_fits[0]
    assert flat.bracketed_fraction is not None
    assert flat.bracketed_fraction < 0.9
    sizes = [r["params"] for r in rows if r["budget"] == 1e17]
    if flat.params_opt_ci is not None:  # an interval, if any, lies on the ladder
        assert min(sizes) <= flat.params_opt_ci.low <= flat.params_opt_ci.high <= max(sizes)
    if flat.bracketed:
        assert "budget 1e+17 N* interval" in a.not_identified
    else:
        assert a.laws["params"].points == 5  # an unbracketed minimum never enters the laws


def test_a_parameter_on_its_optimizer_bound_is_flagged() -> None:
    # a loss with no floor: E wants to be 0 and ends on the lower bound exp(-10) of its search
    rows = surface_rows(noise=0.002)
    for r in rows:
        r["loss"] = 406.4 / r["params"] ** 0.34 + 410.7 / r["tokens"] ** 0.28
    f = fit_parametric(
        Points.from_rows(rows), bootstrap=100, noise=estimate_noise(Points.from_rows(rows), 0.002)
    )
    assert "E" in f.at_bound
    assert f.intervals["E"] is None
    a = analyze(Points.from_rows(rows), method="parametric", bootstrap=100, noise=0.002)
    assert "parametric E" in a.not_identified
    assert any(w.startswith("parametric fit: E ends on its optimizer bound") for w in a.warnings)
    assert "E = " in format_text(a)
    assert "on its optimizer bound: not identified" in format_text(a)
    wire = to_result(a).to_wire()
    assert wire["parametric"]["atBound"] == ["E"]
    assert "E" not in wire["parametric"]["intervals"]
    assert "alpha" in wire["parametric"]["intervals"]


def test_replicates_and_measured_errors_are_the_noise_model() -> None:
    rng = np.random.default_rng(0)
    rows = []
    for r in paper_rows(sizes=5):
        for seed in range(3):
            rows.append({**r, "seed": seed, "loss": r["loss"] * np.exp(0.004 * rng.normal())})
    points = Points.from_rows(rows)
    assert points.replicated
    noise = estimate_noise(points)
    assert noise.source == "replicates"
    assert noise.dof == 60  # 30 trials x (3 - 1)
    assert noise.relative == pytest.approx(0.004, rel=0.25)
    a = analyze(points, method="parabola", bootstrap=200)
    assert a.laws["params"].exponent_ci is not None
    assert 0.5681 in a.laws["params"].exponent_ci
    # measured standard errors: intervals follow them
    se_rows = [{**r, "loss_se": 0.002 * r["loss"]} for r in paper_rows(noise=0.0005, seed=4)]
    wider = [{**r, "loss_se": 0.008 * r["loss"]} for r in paper_rows(noise=0.0005, seed=4)]
    narrow_fit = analyze(Points.from_rows(se_rows), method="parabola", bootstrap=300)
    wide_fit = analyze(Points.from_rows(wider), method="parabola", bootstrap=300)
    assert narrow_fit.noise.source == "measured"
    assert narrow_fit.noise.relative == pytest.approx(0.002)
    n_ci, w_ci = narrow_fit.laws["params"].exponent_ci, wide_fit.laws["params"].exponent_ci
    assert n_ci is not None
    assert w_ci is not None
    assert w_ci.width > 3 * n_ci.width
    # an error smaller than the scatter around each curve is only a floor: the residuals win
    small = [{**r, "loss_se": 1e-4 * r["loss"]} for r in paper_rows(noise=0.004, seed=4)]
    assert estimate_noise(Points.from_rows(small)).source == "residuals"
    # three trials per budget leave no residual: the measured error alone gives the intervals
    three = [{**r, "loss_se": 0.003 * r["loss"]} for r in paper_rows(noise=0.003, sizes=3)]
    fit3 = analyze(Points.from_rows(three), method="parabola", bootstrap=200)
    assert fit3.noise.source == "measured"
    assert fit3.laws["params"].exponent_ci is not None
    assert fit3.laws["params"].exponent_ci.width > 0.01


def test_local_parabolas_remove_the_whole_ladder_bias() -> None:
    assert api.FitSpec().window == DEFAULT_WINDOW  # the spec's default is the library's
    points, true = paper_grid(CROSS_LIKE)
    whole = analyze(points, method="parabola", bootstrap=0, window=None)
    local = analyze(points, method="parabola", bootstrap=0)
    assert abs(whole.laws["params"].exponent - true) > 0.05
    assert abs(local.laws["params"].exponent - true) < 0.005


def test_the_hold_out_check_raises_no_false_alarm_on_clean_simulated_data() -> None:
    law = Law()  # the paper's laws: N* = 0.0009 C^0.5681
    inside = inside_exact = 0
    for seed in range(12):
        rng = np.random.default_rng(seed)
        rows = []
        for c in PAPER_BUDGETS:
            for dx in np.linspace(-0.8, 0.8, 9):
                n = 0.0009 * c**0.5681 * 10**dx
                d = c / (6 * n)
                loss = float(law(n, d)) * float(np.exp(0.005 * rng.normal()))
                rows.append({"budget": c, "params": n, "tokens": d, "loss": loss})
        a = analyze(Points.from_rows(rows), method="parabola", bootstrap=200, hold_out="largest")
        assert a.holdout is not None
        inside += bool(a.holdout.params_within)
        # this law's L* has a floor, so a pure power law undershoots it: reported, explained
        assert a.holdout.loss_error < 0
        exact = paper_rows(noise=0.005, seed=seed, sizes=9)  # L* exactly a power law
        b = analyze(Points.from_rows(exact), method="parabola", bootstrap=200, hold_out="largest")
        assert b.holdout is not None
        inside_exact += bool(b.holdout.within_prediction_interval)
    # 95% intervals: a miss or two in twelve, not most of them
    assert inside >= 10
    assert inside_exact >= 10


def test_disagreeing_methods_are_flagged() -> None:
    points, _ = paper_grid(CROSS_LIKE, noise=0.002, seed=2)
    # the whole-ladder parabola is biased by about -0.09 here; the parametric fit is not
    a = analyze(points, method="both", bootstrap=100, window=None)
    assert a.disagreement is not None
    assert a.disagreement.startswith("the methods disagree")
    assert to_result(a).methods_agree is False
    local = analyze(points, method="both", bootstrap=100)
    assert local.disagreement is None
    assert to_result(local).methods_agree is True


def test_per_run_flops_fit_with_bins(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Chinchilla-style data: every run's measured FLOPs differ a little from its budget."""
    rng = np.random.default_rng(7)
    lines = ["compute,params,tokens,loss"]
    for c in PAPER_BUDGETS:
        n_opt = 0.0009 * c**0.5681
        for dx in np.linspace(-0.6, 0.6, 7):
            n = n_opt * 10**dx
            measured = c * (1 + 0.1 * rng.uniform(-1, 1))
            loss = (2.3943 * c**-0.0273 + 0.05 * dx**2) * (1 + 0.002 * rng.normal())
            lines.append(f"{measured:.6e},{n:.6e},{measured / (6 * n):.6e},{loss:.6f}")
    table = tmp_path / "runs.csv"
    table.write_text("\n".join(lines) + "\n")
    assert cli.main(["fit", str(table), "--method", "parabola", "--bootstrap", "200"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("isoflop: error: scaling laws need at least 2 budgets")
    assert "fewer than the 3 model sizes a parabola needs at" in err
    assert err.count("(1)") >= 20  # every lone trial named at once, not just the first
    assert "group measured budgets with --bin" in err
    argv = [
        "fit",
        str(table),
        "--bin",
        "0.1",
        "--bootstrap",
        "200",
        "--json",
        "--plot",
        str(tmp_path),
    ]
    assert cli.main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["budgetFits"]) == 6
    assert out["laws"]["params"]["exponent"] == pytest.approx(0.5681, abs=0.02)
    assert out["parametric"]["intervals"]["alpha"]["low"] > 0
    assert out["holdOut"]["withinPredictionInterval"] is not None
    assert (tmp_path / "parametric.png").stat().st_size > 10_000
    assert (
        cli.main(
            ["fit", str(table), "--bin", "0.1", "--method", "parametric", "--bootstrap", "100"]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "implied N* ~ C^" in text
    assert "Hold-out" not in text
    assert cli.main(["fit", str(table), "--bin", "0.1", "--bootstrap", "10"]) == 2
    assert "10 resamples are too few" in capsys.readouterr().err


def test_surface_exponent_is_covered_by_both_methods() -> None:
    a = analyze(Points.from_rows(surface_rows(seed=3)), bootstrap=200)
    assert a.noise.source == "residuals"
    assert a.laws["params"].exponent_ci is not None
    assert A_TRUE in a.laws["params"].exponent_ci
    assert a.parametric is not None
    interval = a.parametric.intervals["params_exponent"]
    assert interval is not None
    assert A_TRUE in interval


def test_the_parametric_fit_finds_small_diffusion_exponents() -> None:
    """Exponents of 0.2-0.26: from a grid of 0.5 steps every start sat on a plateau."""
    paper = Law()
    law = Law(paper.E, paper.A * 3 ** (paper.alpha + paper.beta), paper.B, paper.alpha, paper.beta)
    points, _ = paper_grid(law, noise=0.002)
    f = fit_parametric(points)
    assert f.alpha == pytest.approx(law.alpha, abs=0.03)
    assert f.beta == pytest.approx(law.beta, abs=0.03)
    assert f.params_exponent == pytest.approx(law.params_exponent, abs=0.015)


def test_forecast_from_a_pilots_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The surface and noise of a pilot's trials.csv drive the forecast of the planned grid."""
    spec = api.load_sweep(ROOT / "examples" / "quickstart.yaml").spec
    law = Law(0.12, 1.3e6, 1000.0, 1.3, 0.75)  # the shape a quickstart run measured
    rng = np.random.default_rng(3)
    lines = ["id,budget,params,tokens,phase,loss"]
    for t in plan(spec).trials:
        loss = float(law(float(t.params), float(t.tokens))) * float(np.exp(0.02 * rng.normal()))
        lines.append(f"{t.id},{t.budget},{t.params},{t.tokens},Succeeded,{loss}")
    lines.append("extra,3e10,1000,1000,Failed,")  # a failed trial has no loss: left out
    table = tmp_path / "trials.csv"
    table.write_text("\n".join(lines) + "\n")
    quickstart = str(ROOT / "examples" / "quickstart.yaml")
    argv = ["forecast", quickstart, "--from", str(table), "--runs", "6", "--no-variants"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"Law fitted to {table}: E=")
    noise = float(out.split("; noise ")[1].split("%")[0]) / 100
    assert noise == pytest.approx(0.02, rel=0.35)  # the pilot's own scatter
    assert "Verdict: this grid can" in out or "Verdict: this grid cannot" in out
    assert cli.main([*argv, "--law", "1,2,3,0.3,0.3"]) == 2
    assert "give --law or --from, not both" in capsys.readouterr().err


def test_the_forecast_verdict_says_what_the_grid_can_measure() -> None:
    from isoflop.sweep.forecast import ExponentForecast, Forecast

    def verdict(
        bias: float, coverage: float, identified: float = 1.0, target: float | None = None
    ) -> str:
        e = ExponentForecast(
            "params", "parabola", 0.57, 0.57 + bias, bias, 0.02, 0.08, coverage, identified
        )
        return Forecast(40, 0.005, Law(), 0, (e,), target=target).verdict()

    assert (
        verdict(0.001, 0.95)
        == "this grid can measure the N* exponent to +-0.040 (95%, bias +0.0010)"
    )
    assert "conservative" in verdict(0.001, 1.0)
    assert verdict(0.03, 0.95).startswith("this grid cannot measure the N* exponent reliably")
    assert "hold the truth 70% of the time" in verdict(0.001, 0.70)
    assert "not identified in 30%" in verdict(0.001, 0.95, identified=0.7)
    assert verdict(0.001, 0.95, target=0.02).startswith(
        "this grid cannot measure the N* exponent to +-0.02: it gets to +-0.040"
    )
