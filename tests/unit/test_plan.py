"""The isoFLOP planner: feasibility, deterministic IDs, FLOPs conservation, the paper's grid."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from isoflop import api
from isoflop.sweep.check import law_problems
from isoflop.sweep.plan import (
    H100_MFU_CURVE,
    MfuCurve,
    budget_tag,
    ladder,
    plan,
    trial_id,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def spec(**kw: Any) -> api.ScalingSweepSpec:
    base: dict[str, Any] = {"model": {"depths": [2, 3, 4]}, "budgets": [1e17, 1e18]}
    base.update(kw)
    return api.parse_spec(base)


@pytest.mark.parametrize(
    ("budget", "tag"),
    [
        (1e17, "1e17"),
        (3e17, "3e17"),
        (1.5e21, "1p5e21"),
        (6e18, "6e18"),
        (2.5e9, "2p5e9"),
        (123456.0, "1p23456e5"),
    ],
)
def test_budget_tags_are_short_and_dns_safe(budget: float, tag: str) -> None:
    assert budget_tag(budget) == tag


def test_paper_grid_is_6_budgets_by_14_depths() -> None:
    sweep = api.load_sweep(EXAMPLES / "paper-in-context.yaml")
    p = plan(sweep.spec)
    assert not p.infeasible
    assert len(p.trials) == 84
    assert sorted({t.budget for t in p.trials}) == [1e17, 3e17, 6e17, 1e18, 3e18, 6e18]
    assert sorted({t.depth for t in p.trials}) == list(range(2, 16))
    for t in p.trials:
        assert t.width == 64 * t.depth
        # the paper's convention: the spent FLOPs are 6 N D, and they match the budget to a step
        assert t.flops == t.flops_6nd == 6 * t.params * t.tokens
        assert abs(t.flops - t.budget) <= t.flops_per_sample * t.batch_size / 2
        # exact accounting counts fewer FLOPs than 6ND here: embeddings act on few tokens
        assert t.flops_exact < t.flops_6nd


def test_exact_accounting_spends_the_budget() -> None:
    p = plan(spec())
    assert p.accounting == "exact"
    for t in p.trials:
        assert t.flops == t.flops_exact == t.samples * t.flops_per_sample
        assert t.samples == t.steps * t.batch_size
        assert t.tokens == t.samples * t.tokens_per_sample
        assert abs(t.rounding) <= t.flops_per_sample * t.batch_size / 2 / t.budget
        assert t.rounding == pytest.approx(t.flops / t.budget - 1)


def test_bigger_models_get_fewer_steps_at_equal_budget() -> None:
    p = plan(spec(budgets=[1e18]))
    steps = [t.steps for t in sorted(p.trials, key=lambda t: t.params)]
    assert steps == sorted(steps, reverse=True)


def test_infeasible_trials_are_listed_with_the_reason() -> None:
    # 1e13 FLOPs buy depth 2 about 8 steps of 1024 but depth 4 only about 2 (< minSteps 5).
    p = plan(spec(budgets=[1e13, 1e17], training={"minSteps": 5}))
    bad = {i.id: i for i in p.infeasible}
    assert "1e13-d04" in bad
    assert "1e13-d02" in {t.id for t in p.trials}
    assert (
        bad["1e13-d04"].reason
        == f"{bad['1e13-d04'].steps} steps of batch 1024, fewer than minSteps 5"
    )
    everything = {trial_id(b, f"d{d:02d}") for b in (1e13, 1e17) for d in (2, 3, 4)}
    assert {t.id for t in p.trials} | set(bad) == everything
    assert not {t.id for t in p.trials} & set(bad)
    huge = plan(spec(budgets=[1e12], training={"globalBatchSize": 4096}))
    assert not huge.trials
    assert all("less than one batch of 4096" in i.reason for i in huge.infeasible)
    assert all(i.steps == 0 for i in huge.infeasible)


def test_trial_ids_are_deterministic_and_stable_when_the_grid_grows() -> None:
    small = plan(spec())
    again = plan(spec())
    assert [t.id for t in small.trials] == [t.id for t in again.trials]
    grown = plan(spec(model={"depths": [1, 2, 3, 4, 5]}, budgets=[3e16, 1e17, 1e18, 1e19]))
    old = {t.id: t for t in small.trials}
    new = {t.id: t for t in grown.trials}
    assert set(old) <= set(new)
    for tid, t in old.items():
        assert new[tid] == t  # same trial, same size: a finished result stays valid
    ids = [t.id for t in grown.trials] + [i.id for i in grown.infeasible]
    assert len(ids) == len(set(ids))
    for tid in ids:
        assert len(tid) <= 20
        assert tid == tid.lower()


def test_explicit_configs_and_ordering() -> None:
    s = spec(
        model={
            "configs": [
                {"name": "big", "depth": 4, "width": 512, "heads": 8},
                {"name": "small", "depth": 2, "width": 128},
            ]
        }
    )
    rungs = ladder(s)
    assert [r.name for r in rungs] == ["small", "big"]
    assert rungs[0].config.heads == 2  # width / headDim
    assert {t.id for t in plan(s).trials} >= {"1e17-small", "1e18-big"}


def test_too_close_budgets_are_rejected() -> None:
    with pytest.raises(ValueError, match="too close to tell apart"):
        plan(spec(budgets=[1e17, 1.0000001e17]))


def test_gpu_hours_scale_with_mfu() -> None:
    t = plan(spec()).trials[0]
    assert t.gpu_hours(mfu=0.2) == pytest.approx(2 * t.gpu_hours(mfu=0.4))
    assert t.gpu_hours(mfu=1.0, peak_flops=1e15) == pytest.approx(t.flops_exact / 1e15 / 3600)


def test_quickstart_plans_every_budget_with_a_fine_ladder() -> None:
    p = plan(api.load_sweep(EXAMPLES / "quickstart.yaml").spec)
    per_budget: dict[float, int] = {}
    for t in p.trials:
        per_budget[t.budget] = per_budget.get(t.budget, 0) + 1
    assert len(per_budget) == 4
    assert min(per_budget.values()) >= 8  # local parabolas and a noise estimate need rungs to spare
    sizes = sorted({t.params for t in p.trials})
    assert max(b / a for a, b in itertools.pairwise(sizes)) < 1.5  # under 0.18 decades


def test_replicates_train_each_trial_under_more_seeds() -> None:
    from isoflop.fit import Points
    from isoflop.fit.noise import estimate_noise
    from isoflop.sweep.forecast import Law, simulated_loss
    from isoflop.sweep.trials import train_config

    one = plan(spec(training={"seed": 7}))
    three = plan(spec(training={"seed": 7, "replicates": 3}))
    assert len(three.trials) == 3 * len(one.trials)
    ids = [t.id for t in three.trials]
    assert len(set(ids)) == len(ids)
    assert {t.id for t in one.trials} <= set(ids)  # the first replicate keeps the old ID
    assert trial_id(1e17, "d02", 2) == "1e17-d02-r2" in ids
    s = spec(training={"seed": 7, "replicates": 3})
    seeds = [
        train_config(s, "x", t).seed for t in three.trials if t.rung == "d02" and t.budget == 1e17
    ]
    assert seeds == [7, 8, 9]
    assert sum(t.flops for t in three.trials) == 3 * sum(t.flops for t in one.trials)
    # their rows are replicates to the fit: the noise model measures the seeds' spread
    rows = [
        {
            "budget": t.budget,
            "params": t.params,
            "tokens": t.tokens,
            "loss": simulated_loss(Law(), t.id, t.params, t.tokens, 0.004, 0),
        }
        for t in three.trials
    ]
    noise = estimate_noise(Points.from_rows(rows))
    assert noise.source == "replicates"
    assert noise.dof == 2 * len(one.trials)
    with pytest.raises(ValueError, match="replicates"):
        spec(training={"replicates": 0})


def test_every_trial_gets_the_evaluation_and_its_rungs_learning_rate() -> None:
    from isoflop.sweep.trials import train_config

    evaluation = {
        "fid": {"samples": 500, "steps": 10, "guidance": 2.0, "features": "clip-vit-l-14",
                "weights": "/w/clip.pt", "vae": "/w/vae"},
        "likelihood": {"samples": 64, "steps": 16},
    }  # fmt: skip
    s = spec(evaluation=evaluation, training={"learningRate": 1e-3, "emaDecay": 0.999})
    cfg = train_config(s, "x", plan(s).trials[0])
    assert (cfg.fid_samples, cfg.fid_steps, cfg.fid_guidance) == (500, 10, 2.0)
    assert (cfg.fid_features, cfg.fid_weights, cfg.vae) == ("clip-vit-l-14", "/w/clip.pt", "/w/vae")
    assert (cfg.likelihood_samples, cfg.likelihood_steps) == (64, 16)
    assert cfg.ema_decay == 0.999
    # none: one rate; width: learningRate x baseWidth / width (base: the narrowest rung)
    widths = {r.name: r.config.width for r in ladder(s)}
    assert widths == {"d02": 128, "d03": 192, "d04": 256}
    for rule, base, expected in [
        ("none", None, {"d02": 1e-3, "d03": 1e-3, "d04": 1e-3}),
        ("width", None, {"d02": 1e-3, "d03": 1e-3 * 128 / 192, "d04": 5e-4}),
        ("width", 256, {"d02": 2e-3, "d03": 1e-3 * 256 / 192, "d04": 1e-3}),
    ]:
        ruled = spec(
            training={"learningRate": 1e-3, "learningRateScaling": rule, "baseWidth": base}
        )
        got = {t.rung: train_config(ruled, "x", t).learning_rate for t in plan(ruled).trials}
        assert got == pytest.approx(expected)
    # a rung's own learning rate wins over the rule
    own = spec(
        model={"configs": [{"name": "a", "depth": 2, "width": 64, "learningRate": 3e-3},
                           {"name": "b", "depth": 2, "width": 128}]},
        training={"learningRate": 1e-3, "learningRateScaling": "width"},
    )  # fmt: skip
    got = {t.rung: train_config(own, "x", t).learning_rate for t in plan(own).trials}
    assert got == pytest.approx({"a": 3e-3, "b": 5e-4})
    with pytest.raises(api.ManifestError, match=r"spec\.evaluation\.fid\.features"):
        spec(evaluation={"fid": {"features": "resnet"}})


def test_a_plan_that_cannot_give_a_law_says_which_budgets_fall_short_and_why() -> None:
    ok = spec(budgets=[1e17, 1e18])
    assert law_problems(ok, plan(ok)) is None  # 2 budgets x 3 sizes
    one = spec(budgets=[1e17])
    assert law_problems(one, plan(one)) == (
        "spec.budgets: a scaling law needs 2 or more budgets with 3 or more feasible model sizes "
        "each: 1e+17 has 3 feasible model sizes"
    )
    short = spec(budgets=[1e13, 1e17], training={"minSteps": 5})  # 1e13 loses depths 3 and 4
    said = law_problems(short, plan(short))
    assert said is not None
    assert "1e+13 has 1 feasible model size (d03: 3 steps of batch 1024, fewer than" in said
    assert "fewer than minSteps 5)" in said
    assert said.endswith("1e+17 has 3 feasible model sizes")
    replicated = spec(budgets=[1e17, 1e18], model={"depths": [2, 3]}, training={"replicates": 3})
    assert law_problems(replicated, plan(replicated)) is not None  # replicates are no new sizes


def test_the_mfu_curve_interpolates_in_log_size_and_holds_its_ends() -> None:
    curve = MfuCurve(((1e6, 0.05), (1e8, 0.35)), "test")
    assert curve.at(1e7) == pytest.approx(0.20)  # halfway in log(params)
    assert curve.at(1e3) == 0.05  # held below the smallest measured size
    assert curve.at(1e10) == 0.35  # and above the largest
    t = plan(spec(budgets=[1e17, 1e18])).trials[0]
    assert t.gpu_hours(curve) == pytest.approx(t.gpu_hours(curve.at(t.params)))
    lines = '{"params": 1e8, "mfu": 0.2, "mode": "eager"}\n{"params": 1e8, "mfu": 0.3}\n\n'
    lines += '{"params": 1e6, "mfu": 0.04}\n'
    read = MfuCurve.from_jsonl(lines, "bench.jsonl")
    assert read.points == ((1e6, 0.04), (1e8, 0.3))  # sorted; the best of one size's lines
    with pytest.raises(ValueError, match=r"^bench.jsonl line 2: expected JSON with numbers"):
        MfuCurve.from_jsonl('{"params": 1, "mfu": 0.1}\n{"tflops": 3}', "bench.jsonl")
    with pytest.raises(ValueError, match="0 < mfu <= 1"):
        MfuCurve.from_jsonl('{"params": 1e6, "mfu": 40}', "bench.jsonl")


def test_small_models_cost_more_gpu_hours_per_flop_than_a_flat_mfu_says() -> None:
    paper = api.load_sweep(Path(__file__).resolve().parents[2] / "examples/paper-in-context.yaml")
    p = plan(paper.spec)
    curve = sum(t.gpu_hours(H100_MFU_CURVE) for t in p.trials)
    flat = sum(t.gpu_hours(0.40) for t in p.trials)
    assert 3 < curve / flat < 4  # 257 against 77.7 GPU-hours: the paper's rungs are small
