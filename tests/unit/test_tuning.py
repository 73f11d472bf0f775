"""The tuning stage (spec.tuning): its plan, its choices, the learning-rate law, and the engine
training the grid at the law's rates."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from isoflop import api
from isoflop.fit.rates import RatePoint, fit_batch_law, fit_rate_law, rate_optimum
from isoflop.sweep.check import runnable_plan
from isoflop.sweep.confirm import confirm_id, trial_of
from isoflop.sweep.engine import TrialState, decide, resolve
from isoflop.sweep.forecast import BatchBasin, RateBasin
from isoflop.sweep.plan import Plan, batch_unit, is_tuning, plan
from isoflop.sweep.status import results_table, sweep_status
from isoflop.sweep.trials import train_config


def spec(tuning: dict[str, Any] | None = None, **kw: Any) -> api.ScalingSweepSpec:
    base: dict[str, Any] = {
        "model": {"depths": [1, 2, 3, 4], "widthPerDepth": 32, "headDim": 32, "patchSize": 4},
        "data": {"latentShape": [3, 16, 16], "textLength": 8, "textDim": 32},
        "budgets": [3e10, 1e11, 3e11],
        "training": {"globalBatchSize": 16, "minSteps": 10, "learningRate": 1e-3},
        "tuning": {} if tuning is None else tuning,
    }
    base.update(kw)
    return api.parse_spec(base)


BASIN = RateBasin(coefficient=0.2, alpha=-0.7, beta=0.3, depth=0.2)


def basin_loss(trial: Any) -> float:
    """A loss with a known optimum rate per (N, D): Step Law's shape."""
    size = 1.0 + 1e4 / trial.params**0.5 + 50.0 / trial.tokens**0.3
    return size * BASIN.factor(trial.params, trial.tokens, trial.learning_rate)


def drive(
    s: api.ScalingSweepSpec, p: Plan, loss: Any = basin_loss, fail: frozenset[str] = frozenset()
) -> tuple[dict[str, TrialState], list[Any]]:
    """Every launch finishes at once (those in `fail` fail), until the sweep ends or asks for
    its confirmations' predictions; the launches in order, then the last decision."""
    states: dict[str, TrialState] = {}
    fitted: tuple[float, ...] = ()
    launched: list[Any] = []
    for _ in range(1000):
        d = decide(s, p, states, fitted)
        if d.fit_due:
            fitted = d.complete_budgets
        if d.phase in ("Succeeded", "Failed") or d.confirm_due:
            return states, [*launched, d]
        for launch in d.launches:
            launched.append(launch)
            start = TrialState(phase="Running", attempts=launch.attempt)
            states[launch.trial.id] = (
                start.fail("boom")
                if launch.trial.id in fail
                else start.finish(loss(launch.trial), {}, "simulated")
            )
    raise AssertionError("the sweep never ended")


# -- the fit ----------------------------------------------------------------------------------


def test_the_optimum_is_the_parabolas_vertex_in_log_rate_between_its_neighbours() -> None:
    rates = [1e-3, 2e-3, 4e-3]
    vertex = math.log10(2.5e-3)
    losses = [1.0 + 0.3 * (math.log10(r) - vertex) ** 2 for r in rates]
    assert rate_optimum(rates, losses) == pytest.approx(2.5e-3, rel=1e-9)
    assert rate_optimum(rates, [1.0, 1.0, 1.0]) == 2e-3  # a flat basin: its middle
    with pytest.raises(ValueError, match="lowest loss"):
        rate_optimum(rates, [1.0, 1.1, 1.2])
    with pytest.raises(ValueError, match="ascend"):
        rate_optimum([2e-3, 1e-3, 4e-3], [1.1, 1.0, 1.2])


def test_the_law_recovers_known_exponents_and_takes_the_form_its_points_identify() -> None:
    truth = (0.5, -0.7, 0.3)

    def point(budget: float, params: float) -> RatePoint:
        tokens = budget / (6 * params)
        return RatePoint(budget, params, tokens, truth[0] * params ** truth[1] * tokens ** truth[2])

    grid = [point(b, n) for b in (1e10, 3e10) for n in (1e5, 3e5, 1e6)]
    law = fit_rate_law(grid, bootstrap=200)
    assert law.form == "params-tokens"
    assert law.params_exponent == pytest.approx(-0.7)
    assert law.tokens_exponent == pytest.approx(0.3)
    assert law.coefficient == pytest.approx(0.5)
    assert law(2e6, 1e7, 1e14) == pytest.approx(0.5 * 2e6**-0.7 * 1e7**0.3)
    # exact points: the residual bootstrap's intervals shrink to the values
    ci = law.intervals["params"]
    assert ci is not None
    assert ci.low == pytest.approx(-0.7)
    assert ci.high == pytest.approx(-0.7)

    one_size = fit_rate_law([point(b, 1e5) for b in (1e10, 3e10, 1e11)], bootstrap=200)
    assert one_size.form == "compute"
    assert one_size.params_exponent is None
    assert one_size.compute_exponent == pytest.approx(0.3)  # D grows as C at one size
    one_budget = fit_rate_law([point(1e10, n) for n in (1e5, 3e5)], bootstrap=200)
    assert one_budget.form == "params"
    assert one_budget.tokens_exponent is None
    assert one_budget.intervals["params"] is None  # two points, no residual: not identified
    single = fit_rate_law([point(1e10, 1e5)])
    assert single.form == "constant"
    assert single(1.0, 1.0, 1.0) == pytest.approx(single.coefficient)
    with pytest.raises(ValueError, match="at least one"):
        fit_rate_law([])


def test_the_laws_intervals_cover_the_truth_as_often_as_they_claim() -> None:
    """Residual bootstrap on noisy optima (0.05 decades of scatter): the 95% interval of each
    exponent holds the truth in most of 200 simulated stages."""
    rng = np.random.default_rng(7)
    hits = {"params": 0, "tokens": 0}
    for _ in range(200):
        points = []
        for b in (1e10, 3e10, 1e11):
            for n in (1e5, 2e5, 4e5, 8e5):
                d = b / (6 * n)
                rate = 0.5 * n**-0.7 * d**0.3 * 10 ** (0.05 * rng.normal())
                points.append(RatePoint(b, n, d, rate))
        law = fit_rate_law(points, bootstrap=400, seed=int(rng.integers(1 << 30)))
        for name, true in (("params", -0.7), ("tokens", 0.3)):
            ci = law.intervals[name]
            assert ci is not None
            hits[name] += ci.low <= true <= ci.high
    assert 0.80 <= hits["params"] / 200 <= 1.0, hits
    assert 0.80 <= hits["tokens"] / 200 <= 1.0, hits


# -- the plan ---------------------------------------------------------------------------------


def test_the_default_stage_tunes_three_rungs_at_the_two_smallest_budgets_over_a_log_grid() -> None:
    s = spec()
    p = plan(s)
    assert len(p.trials) == 12  # the grid is unchanged
    budgets = sorted({t.budget for t in p.tuning})
    assert budgets == [1.5e10, 3e10]  # the grid's smallest and half of it
    rungs = sorted({t.rung for t in p.tuning})
    assert rungs == ["d01", "d02", "d03"]  # the smallest, middle and largest feasible (not d04)
    rates = sorted({t.learning_rate for t in p.tuning})
    # 1e-3 x 2^-2..2, and four widening steps beyond each end (3 significant digits)
    assert rates[4:9] == [2.5e-4, 5e-4, 1e-3, 2e-3, 4e-3]
    assert rates[:4] == [1.56e-5, 3.13e-5, 6.25e-5, 1.25e-4]
    assert rates[9:] == [8e-3, 1.6e-2, 3.2e-2, 6.4e-2]
    assert len(p.tuning) == 2 * 3 * 13
    t = next(t for t in p.tuning if t.learning_rate == 1e-3 and t.budget == 3e10)
    assert t.id == f"tune-3e10-{t.rung}-lr1em3"
    assert is_tuning(t.id)
    assert t.steps == round(3e10 / (t.flops_per_sample * 16))  # sized like any trial
    assert train_config(s, "sw", t).learning_rate == 1e-3
    assert all(train_config(s, "sw", g).learning_rate == 1e-3 for g in p.trials)
    assert plan(api.parse_spec(_no_tuning())).tuning == ()  # no stage without spec.tuning


def _no_tuning() -> dict[str, Any]:
    return {
        "model": {"depths": [1, 2], "widthPerDepth": 32, "headDim": 32, "patchSize": 4},
        "data": {"latentShape": [3, 16, 16], "textLength": 8, "textDim": 32},
        "budgets": [3e10, 1e11],
        "training": {"globalBatchSize": 16, "minSteps": 10},
    }


def test_explicit_budgets_rungs_and_rates_and_the_refusals() -> None:
    s = spec({"budgets": [2e10], "rungs": ["d02"], "learningRates": [1e-3, 3e-3, 1e-2], "widen": 0})
    p = plan(s)
    assert {(t.budget, t.rung) for t in p.tuning} == {(2e10, "d02")}
    assert sorted(t.learning_rate for t in p.tuning) == [1e-3, 3e-3, 1e-2]
    wrong = [
        ({"rungs": ["d09"]}, "tuning.rungs: d09 is not a rung of the ladder (d01, d02, d03, d04)"),
        ({"learningRates": [1e-3, 2e-3]}, "at least three learning rates"),
        ({"learningRates": [1e-3, 1e-3, 2e-3]}, "must not repeat"),
        ({"widen": 7}, "less than or equal to 6"),
    ]
    for tuning, said in wrong:
        with pytest.raises(api.ManifestError, match=re.escape(said)):
            spec(tuning)
    with pytest.raises(api.ManifestError, match=re.escape("strategy.wsdBranches")):
        spec(strategy={"wsdBranches": {}})
    with pytest.raises(api.ManifestError, match="learningRateScaling must be none"):
        spec(training={"globalBatchSize": 16, "minSteps": 10, "learningRateScaling": "width"})
    with pytest.raises(
        api.ManifestError, match=re.escape("spec.tuning.rungs: d04 cannot train at")
    ):
        runnable_plan(spec({"budgets": [1e9], "rungs": ["d04"]}))


# -- the stage and the engine -----------------------------------------------------------------


def test_the_grid_waits_for_the_stage_and_trains_at_the_laws_rate_for_its_own_n_and_d() -> None:
    s = spec(confirm=[1e12], fit={"method": "both"})
    p = plan(s)
    states, launched = drive(s, p)
    d = launched[-1]
    assert d.phase == "Confirming"
    assert d.reason == "Predicting"
    kinds = [launch.node.kind for launch in launched[:-1]]
    first_grid = kinds.index("trial")
    assert set(kinds[:first_grid]) == {"tuning"}
    assert "tuning" not in kinds[first_grid:]
    sweep = resolve(s, p, states)
    stage = sweep.tuning
    assert stage is not None
    assert stage.done
    assert stage.law is not None
    assert stage.law.form == "params-tokens"
    # every rung found its optimum, each near the basin's own
    for g in stage.groups:
        assert g.best is not None
        assert abs(math.log10(g.best / BASIN.optimum(g.params, g.tokens))) < 0.1
    # the grid trained at the law's rates, each the law at its N and D
    grid = [launch.trial for launch in launched[:-1] if launch.node.kind == "trial"]
    assert len(grid) == len(p.trials)
    for t in grid:
        assert t.learning_rate == pytest.approx(stage.law(t.params, t.tokens, t.budget), rel=5e-3)
        assert train_config(s, "sw", t).learning_rate == t.learning_rate
        # close to the truth beyond the stage's budgets: within 0.25 decades at 10x
        assert abs(math.log10(t.learning_rate / BASIN.optimum(t.params, t.tokens))) < 0.25
    rates = {t.learning_rate for t in grid}
    assert len(rates) > 6  # no longer one rate for all

    status = sweep_status(s, p, states, d, None)
    assert status.tuning is not None
    assert status.tuning.phase == "Tuned"
    assert status.tuning.law is not None
    assert status.tuning.law.params_exponent is not None
    assert 0 < status.tuning.grid_fraction < 0.5
    records = {r.id: r for r in status.trials}
    assert all(records[t.id].learning_rate == t.learning_rate for t in grid)
    assert all(records[t.id].kind == "tuning" for t in p.tuning if t.id in stage.chosen)
    unchosen = [t.id for t in p.tuning if t.id not in stage.chosen]
    assert unchosen
    assert all(records[i].phase == "Skipped" for i in unchosen)
    assert sum(b.trials for b in status.budgets) == len(p.trials)  # tuning is no budget's point

    # the same states give the same decisions: a restarted driver trains at the same rates
    assert resolve(s, p, dict(states)).graph == sweep.graph


def test_a_confirmation_trains_at_the_laws_rate() -> None:
    s = spec(confirm=[1e12], fit={"method": "both"})
    p = plan(s)
    states, launched = drive(s, p)
    stage = resolve(s, p, states).tuning
    assert stage is not None
    assert stage.law is not None
    c = api.Confirmation(budget=1e12, trial=confirm_id(1e12), depth=4, width=128, heads=4)
    d = decide(s, p, states, launched[-1].complete_budgets, [c])
    (launch,) = d.launches
    t = launch.trial
    assert t.learning_rate == pytest.approx(stage.law(t.params, t.tokens, t.budget), rel=5e-3)
    # and its record says so
    stored = c.model_copy(update={"params": t.params, "tokens": t.tokens, "steps": t.steps})
    status = sweep_status(s, p, states, d, None, confirmations=[stored])
    assert status.confirmations[0].learning_rate == t.learning_rate


def test_a_rung_whose_best_rate_sits_at_an_edge_widens_then_stops_with_a_wider_grid() -> None:
    """The optimum is 30x above the requested grid: each rung widens two steps upward, its loss
    still falls at the top, and the sweep stops, naming the rung and edge and proposing rates
    around it, with no grid trial trained."""
    s = spec({"widen": 2})
    p = plan(s)

    def too_high(t: Any) -> float:  # the best rate: ever higher
        return 1.0 + 1e-3 / t.learning_rate

    states, launched = drive(s, p, loss=too_high)
    d = launched[-1]
    assert d.phase == "Failed"
    assert d.reason == "TuningFailed"
    assert all(launch.node.kind == "tuning" for launch in launched[:-1])
    assert d.message.startswith("tuning: rung d01 at 1.5e10 FLOPs has its lowest loss at the ")
    assert "upper edge (0.016) after widening 2 step(s) (and 5 more at an edge)" in d.message
    assert d.message.endswith("give spec.tuning.learningRates [0.004, 0.008, 0.016, 0.032, 0.064]")
    # each rung tried its 5 rates and then the 2 above, one at a time; never the ones below
    assert len(states) == 6 * 7
    assert not any(t.learning_rate < 2.5e-4 for t in p.tuning if t.id in states)
    # the proposal, given, moves the stage on: the finished trials are kept (same IDs)
    wider = spec({"learningRates": [0.004, 0.008, 0.016, 0.032, 0.064], "widen": 2})
    kept = {t.id for t in plan(wider).tuning} & set(states)
    assert len(kept) == 6 * 5  # 1e-3 to 1.6e-2 of every rung: the new grid widened down


def test_a_rung_with_too_few_trained_rates_is_left_out_of_the_law() -> None:
    s = spec(retries={"perTrial": 0, "maxFailedTrials": 0})
    p = plan(s)
    dead = frozenset(t.id for t in p.tuning if t.rung == "d03" and t.budget == 1.5e10)
    states, launched = drive(s, p, fail=dead)
    stage = resolve(s, p, states).tuning
    assert stage is not None
    assert stage.law is not None
    bad = next(g for g in stage.groups if g.rung == "d03" and g.budget == 1.5e10)
    assert bad.settled
    assert bad.best is None
    assert bad.problem == "0 of its 5 learning rates trained to a loss"
    assert stage.law.points == 5
    assert launched[-1].phase == "Succeeded"  # tuning failures are no grid failures


# -- batch sizes (spec.tuning.globalBatchSizes) -------------------------------------------------

BATCHES = BatchBasin(coefficient=0.1, beta=0.5, depth=0.1)


def batch_loss(trial: Any) -> float:
    """basin_loss, times a basin in log batch around B*(D) = 0.1 D^0.5 (8-55 at the stage's
    rungs, up to 170 on the grid)."""
    return basin_loss(trial) * BATCHES.factor(trial.tokens, trial.batch_size)


def test_the_batch_law_recovers_its_exponent_and_is_a_constant_at_one_d() -> None:
    points = [
        RatePoint(b, n, d, 0.5 * d**0.55) for b, n, d in ((1e10, 1e5, 2e4), (3e10, 1e5, 6e4),
                                                          (3e10, 3e5, 2e4), (1e11, 1e6, 1.7e4))
    ]  # fmt: skip
    law = fit_batch_law(points, bootstrap=200)
    assert law.form == "tokens"
    assert law.batch
    assert law.tokens_exponent == pytest.approx(0.55)
    assert law.coefficient == pytest.approx(0.5)
    assert law.params_exponent is None
    assert law(123.0, 1e6, 1.0) == pytest.approx(0.5 * 1e6**0.55)  # N and C play no part
    assert law.words == "B* = a D^beta (Step Law's batch form)"
    flat = fit_batch_law([RatePoint(1e10, 1e5, 2e4, 64.0), RatePoint(1e10, 3e5, 2e4, 32.0)])
    assert flat.form == "constant"
    assert flat.coefficient == pytest.approx(math.sqrt(64 * 32))
    assert flat.words.startswith("B* = a ")
    with pytest.raises(ValueError, match="a batch-size law needs at least one optimum"):
        fit_batch_law([])


def test_batch_trials_are_planned_per_rung_with_their_own_steps_and_the_refusals() -> None:
    s = spec({"globalBatchSizes": [8, 16, 32], "widen": 2})
    p = plan(s)
    batch = [t for t in p.tuning if t.tunes == "batch"]
    assert {t.batch_size for t in batch} == {2, 4, 8, 16, 32, 64, 128}  # two steps each side
    t = next(t for t in batch if t.batch_size == 32 and t.budget == 3e10)
    assert t.id == f"tune-3e10-{t.rung}-bs32"
    assert t.learning_rate is None  # its rung's optimum, once found
    assert t.steps == round(3e10 / (t.flops_per_sample * 32))
    # a batch that leaves fewer than minSteps steps is not planned
    assert all(x.steps >= 10 for x in batch)
    assert len(batch) < 6 * 7
    # the rate trials are unchanged
    assert len([x for x in p.tuning if x.tunes == "rate"]) == 6 * 9
    with pytest.raises(api.ManifestError, match=re.escape("split evenly over a trial's 8 GPUs")):
        spec({"globalBatchSizes": [4, 8, 16]}, resources={"gpusPerNode": 8})
    on_gpus = spec({"globalBatchSizes": [8, 16, 32]}, resources={"gpusPerNode": 4, "nodes": 2})
    assert batch_unit(on_gpus) == 8  # what the stage rounds every batch it sets to
    wrong = [
        ({"globalBatchSizes": [8, 16]}, "at least three batch sizes"),
        ({"globalBatchSizes": [8, 8, 16]}, "must not repeat"),
    ]
    for tuning, said in wrong:
        with pytest.raises(api.ManifestError, match=re.escape(said)):
            spec(tuning)
    with pytest.raises(
        api.ManifestError,
        match=re.escape(
            "every spec.tuning.globalBatchSizes entry must be a multiple of "
            "spec.training.microBatchSize "
            "(12 is not a multiple of 8)"
        ),
    ):
        spec(
            {"globalBatchSizes": [8, 12, 16]},
            training={"globalBatchSize": 16, "minSteps": 10, "microBatchSize": 8},
        )


def test_batches_train_at_each_rungs_optimum_rate_and_the_grid_at_the_batch_laws_batch() -> None:
    s = spec(
        {"globalBatchSizes": [8, 16, 32, 64], "widen": 2},
        training={"globalBatchSize": 16, "minSteps": 10, "learningRate": 1e-3,
                  "microBatchSize": 4},
    )  # fmt: skip
    p = plan(s)
    states, launched = drive(s, p, loss=batch_loss)
    d = launched[-1]
    assert d.phase == "Succeeded", d.message
    stage = resolve(s, p, states).tuning
    assert stage is not None
    assert stage.ready
    assert stage.batch_law is not None
    assert stage.batch_law.form == "tokens"
    rates = {(g.budget, g.rung): g for g in stage.groups}
    order = [launch.trial.id for launch in launched[:-1]]
    for launch in launched[:-1]:
        t = launch.trial
        if t.tunes != "batch":
            continue
        group = rates[(t.budget, t.rung)]
        assert group.best is not None
        assert t.learning_rate == pytest.approx(group.best, rel=5e-3)  # its rung's optimum
        # launched after every rate of its rung finished
        mine = [x.id for x in p.tuning if x.tunes == "rate" and x.id in stage.chosen
                and (x.budget, x.rung) == (t.budget, t.rung)]  # fmt: skip
        assert max(order.index(i) for i in mine) < order.index(t.id)
    for g in stage.batch_groups:  # each optimum near the basin's own
        assert g.best is not None
        assert abs(math.log10(g.best / BATCHES.optimum(g.tokens))) < 0.15
    assert stage.batch_law.tokens_exponent == pytest.approx(0.5, abs=0.15)
    grid = [launch.trial for launch in launched[:-1] if launch.node.kind == "trial"]
    assert len(grid) == len(p.trials)
    assert len({t.batch_size for t in grid}) > 3  # no longer one batch for all
    planned = {t.id: t for t in p.trials}
    for t in grid:
        assert t.batch_size % 4 == 0  # a multiple of the micro-batch
        assert t.steps >= 10  # never below minSteps
        assert t.samples == t.steps * t.batch_size
        assert abs(t.flops / planned[t.id].flops - 1) <= t.batch_size / planned[t.id].samples
        want = stage.batch_law(1.0, planned[t.id].tokens, 1.0)
        most = planned[t.id].samples // 10 // 4 * 4
        assert t.batch_size == min(max(4, 4 * round(want / 4)), most)
        assert t.learning_rate == pytest.approx(stage.law(t.params, t.tokens, t.budget), rel=5e-3)
        cfg = train_config(s, "sw", t)
        assert (cfg.global_batch_size, cfg.steps) == (t.batch_size, t.steps)
    status = sweep_status(s, p, states, d, None)
    assert status.tuning is not None
    assert status.tuning.batch_law is not None
    assert status.tuning.batch_law.form == "tokens"
    assert "B* = a D^beta" in status.tuning.message
    assert all(g.best_batch_size is not None for g in status.tuning.groups)
    records = {r.id: r for r in status.trials}
    assert all(records[t.id].global_batch_size == t.batch_size for t in grid)
    assert all(records[t.id].tokens == t.tokens for t in grid)
    # the fit sees the tokens each trial trained, not the ones planned at the spec's batch
    rows = results_table(p, states, s)
    assert sorted(r["tokens"] for r in rows) == sorted(float(t.tokens) for t in grid)
    assert sorted(r["tokens"] for r in results_table(p, states)) != sorted(
        r["tokens"] for r in rows
    )
    # the same states give the same decisions: a restarted driver trains the same batches
    assert resolve(s, p, dict(states)).graph == resolve(s, p, states).graph


def test_a_confirmation_trains_at_the_batch_laws_batch_and_its_record_says_so() -> None:
    s = spec(
        {"globalBatchSizes": [8, 16, 32, 64], "widen": 2},
        confirm=[1e12],
        fit={"method": "both"},
        training={"globalBatchSize": 16, "minSteps": 10, "learningRate": 1e-3,
                  "microBatchSize": 4},
    )  # fmt: skip
    p = plan(s)
    states, launched = drive(s, p, loss=batch_loss)
    stage = resolve(s, p, states).tuning
    assert stage is not None
    assert stage.batch_law is not None
    c = api.Confirmation(budget=1e12, trial=confirm_id(1e12), depth=4, width=128, heads=4)
    d = decide(s, p, states, launched[-1].complete_budgets, [c])
    (launch,) = d.launches
    t = launch.trial
    planned = trial_of(s, c)
    assert t.batch_size == stage.tuned_batch(planned.tokens, planned.samples)
    assert t.batch_size != planned.batch_size
    assert t.steps == round(planned.samples / t.batch_size)
    assert t.learning_rate == pytest.approx(stage.law(t.params, t.tokens, t.budget), rel=5e-3)
    stored = c.model_copy(
        update={"params": planned.params, "tokens": planned.tokens, "steps": planned.steps}
    )
    status = sweep_status(s, p, states, d, None, confirmations=[stored])
    (shown,) = status.confirmations
    assert (shown.global_batch_size, shown.steps, shown.tokens) == (t.batch_size, t.steps, t.tokens)
    assert shown.learning_rate == t.learning_rate


def test_a_batch_optimum_beyond_the_grid_stops_the_stage_with_a_wider_batch_grid() -> None:
    """The bigger the batch the better: each rung widens its batches upward until minSteps
    stops it (d01 at 1.5e10: 512 leaves 12 steps, 1024 would leave 6), or, at larger budgets,
    the widening ends."""

    def big_batches(t: Any) -> float:
        return basin_loss(t) * (1.0 + 1.0 / t.batch_size)

    s = spec({"globalBatchSizes": [8, 16, 32], "widen": 5})
    states, launched = drive(s, plan(s), loss=big_batches)
    d = launched[-1]
    assert d.phase == "Failed"
    assert d.reason == "TuningFailed"
    assert all(launch.node.kind == "tuning" for launch in launched[:-1])
    assert d.message.startswith(
        "tuning: rung d01 at 1.5e10 FLOPs has its lowest loss at the batch grid's upper edge "
        "(512) after widening 5 step(s) (and 5 more at an edge): a larger batch leaves fewer "
        "than minSteps 10 steps at this budget"
    )
    trained = sorted(
        int(i.rsplit("bs", 1)[1]) for i in states if i.startswith("tune-1p5e10-d01-bs")
    )
    assert trained == [8, 16, 32, 64, 128, 256, 512]  # widened one at a time, never below

    def rate_at_1em3(t: Any) -> float:  # every rung's best rate: the grid's middle
        return (1.0 + 0.1 * math.log10(t.learning_rate / 1e-3) ** 2) * (1.0 + 1.0 / t.batch_size)

    s = spec({"globalBatchSizes": [8, 16, 32], "widen": 1}, budgets=[3e11, 1e12, 3e12])
    _, launched = drive(s, plan(s), loss=rate_at_1em3)
    d = launched[-1]
    assert d.phase == "Failed"
    assert "has its lowest loss at the batch grid's upper edge (64) after widening 1" in d.message
    assert d.message.endswith("give spec.tuning.globalBatchSizes [32, 64, 128]")


def test_the_forecast_measures_one_rates_bias_and_the_stage_removes_it() -> None:
    """On the quickstart grid with losses whose optimum rate moves with N and D (Step Law's
    exponents, the spec's rate best at the grid's middle): one rate for all pulls the N* exponent
    far below the truth, the stage lands where every trial at its own optimum lands, at a stated
    share of the grid's compute."""
    from isoflop.sweep.forecast import Law
    from isoflop.sweep.forecast_rates import centred_basin, format_rates, simulate_rates

    s = api.load_sweep(Path(__file__).resolve().parents[2] / "examples" / "quickstart.yaml").spec
    paper = Law()
    basin = centred_basin(s)
    mid = sorted(plan(s).trials, key=lambda t: (t.budget, t.params))[9 * 2 + 4]  # 1.2e11, d2w72
    assert basin.optimum(mid.params, mid.tokens) == pytest.approx(s.training.learning_rate)
    law = Law(paper.E, 28.53, paper.B, paper.alpha, paper.beta, rates=basin)
    rows = {r.way: r for r in simulate_rates(s, law, 0.005, 8, 100, seed=3)}
    assert rows["fixed"].bias < -0.1
    assert abs(rows["tuned"].mean - rows["ideal"].mean) < 0.04
    assert 0.1 < rows["tuned"].stage_fraction < 0.2
    assert rows["ideal"].stage_fraction == 0.0
    text = format_rates(list(rows.values()), 8, 0.005, basin)
    assert "one rate (training.learningRate)" in text
    assert f"{rows['tuned'].stage_fraction:.1%}" in text
    with pytest.raises(ValueError, match="no rate basin"):
        simulate_rates(s, paper, 0.005, 2, 100)


def test_the_batch_forecast_measures_a_fixed_batchs_bias_and_the_batch_stage_removes_it() -> None:
    """On the quickstart grid with losses whose optimum rate and batch move with N and D: one
    rate and batch for all pulls the N* exponent below the truth, the stage tuning both lands
    near the baseline, and its batch law's exponent near the basin's."""
    from isoflop.sweep.forecast import Law
    from isoflop.sweep.forecast_batches import centred_batches, simulate_batches
    from isoflop.sweep.forecast_rates import centred_basin

    s = api.load_sweep(Path(__file__).resolve().parents[2] / "examples" / "quickstart.yaml").spec
    paper = Law()
    batches = centred_batches(s)
    mid = sorted(plan(s).trials, key=lambda t: (t.budget, t.params))[9 * 2 + 4]
    assert batches.optimum(mid.tokens) == pytest.approx(s.training.global_batch_size)
    law = Law(paper.E, 28.53, paper.B, paper.alpha, paper.beta, rates=centred_basin(s),
              batches=batches)  # fmt: skip
    rows = {r.way: r for r in simulate_batches(s, law, 0.005, 20, 100, seed=3)}
    assert rows["fixed"].bias < -0.05
    assert abs(rows["both"].bias - rows["ideal"].bias) < 0.03
    assert rows["both"].batch_bias is not None
    assert abs(rows["both"].batch_bias) < 0.05
    assert rows["both"].stage_fraction > rows["rates"].stage_fraction > 0
