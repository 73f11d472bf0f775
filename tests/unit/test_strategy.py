"""Sweep strategies: adaptive ladders' decisions and WSD branches' compute, and their simulation."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import pytest

from isoflop import api
from isoflop.sweep.forecast import (
    Law,
    compare_strategies,
    format_strategies,
    simulate,
    simulate_strategy,
)
from isoflop.sweep.plan import Trial, plan
from isoflop.sweep.strategy import (
    Adaptive,
    Node,
    Wsd,
    adapt,
    around,
    branch_plan,
    by_budget,
    graph,
    run_adaptive,
    widen,
    wsd_flops,
)
from isoflop.sweep.trials import node_config, train_config
from isoflop_trainer.config import DiTConfig, TrainConfig, decay_start

PAPER = api.load_sweep("examples/paper-in-context.yaml").spec


def test_wsd_charges_each_rungs_shared_stable_run_once() -> None:
    p = plan(PAPER)
    rung = [t for t in p.trials if t.rung == p.trials[0].rung]
    per_token = rung[0].flops_exact / rung[0].tokens
    tokens = [t.tokens for t in rung]
    expected = per_token * (0.8 * max(tokens) + 0.2 * sum(tokens))
    assert wsd_flops(rung, Wsd(0.2)) == pytest.approx(expected, rel=1e-12)
    assert wsd_flops(rung, Wsd(1.0)) == pytest.approx(sum(t.flops_exact for t in rung), rel=1e-9)
    full = sum(t.flops_exact for t in p.trials)
    # the paper's budgets sum to 1.1e19 against a largest of 6e18: 0.8*6/11 + 0.2 = 0.636
    assert wsd_flops(p.trials, Wsd(0.2)) / full == pytest.approx(0.8 * 6 / 11 + 0.2, abs=0.003)
    with pytest.raises(ValueError, match="cooldown"):
        Wsd(0.0)


def test_around_centres_on_the_target_and_stops_at_the_ladders_ends() -> None:
    ladder = by_budget(plan(PAPER).trials)[1e18]
    sizes = [t.params for t in ladder]
    chosen = around(ladder, sizes[6] * 1.05, 5)
    assert [t.params for t in chosen] == sizes[4:9]
    assert [t.params for t in around(ladder, 1.0, 5)] == sizes[:5]  # below the ladder
    assert [t.params for t in around(ladder, 1e12, 5)] == sizes[-5:]
    assert around(ladder, 1e7, 40) == ladder
    # strided: the same centre, every third rung, the span shifted to fit inside the ladder
    assert [t.params for t in around(ladder, sizes[6] * 1.05, 5, 3)] == sizes[0:13:3]
    assert [t.params for t in around(ladder, 1.0, 4, 3)] == sizes[0:10:3]
    assert [t.params for t in around(ladder, 1e12, 4, 3)] == sizes[4:14:3]
    # a span longer than the ladder: the widest stride that fits (14 rungs, 5 of them: 3)
    assert [t.params for t in around(ladder, 1e7, 5, 9)] == sizes[0:13:3]
    with pytest.raises(ValueError, match="stride"):
        Adaptive(stride=0)
    with pytest.raises(ValueError, match="at least 3"):
        Adaptive(rungs=2)
    with pytest.raises(ValueError, match="seed_budgets"):
        Adaptive(seed_budgets=1)


def test_widen_adds_the_neighbour_beyond_an_edge_minimum_until_bracketed() -> None:
    ladder = by_budget(plan(PAPER).trials)[1e18]
    chosen = ladder[4:9]
    falling = {t.id: 1.0 - 0.01 * i for i, t in enumerate(ladder)}  # the minimum is above
    assert widen(ladder, chosen, falling) == ladder[9]
    rising = {t.id: 1.0 + 0.01 * i for i, t in enumerate(ladder)}
    assert widen(ladder, chosen, rising) == ladder[3]
    valley = {t.id: (i - 6) ** 2 for i, t in enumerate(ladder)}
    assert widen(ladder, chosen, valley) is None
    assert widen(ladder, ladder[-5:], falling) is None  # the ladder ends: nothing to add
    # strided windows widen a stride further out, or to the ladder's end if that is nearer
    assert widen(ladder, ladder[2:11:2], falling, 2) == ladder[12]
    assert widen(ladder, ladder[2:11:2], rising, 2) == ladder[0]
    assert widen(ladder, ladder[1:12:3], rising, 3) == ladder[0]
    assert widen(ladder, ladder[1:12:3], falling, 3) == ladder[13]


def law_losses(law: Law) -> dict[str, float]:
    return {t.id: float(law(t.params, t.tokens)) for t in plan(PAPER).trials}


def test_an_adaptive_sweep_trains_the_seeds_whole_and_later_budgets_around_the_optimum() -> None:
    exact = law_losses(Law())
    asked: list[list[str]] = []

    def train(chosen: Sequence[Trial]) -> dict[str, float]:
        asked.append([t.id for t in chosen])
        return {t.id: exact[t.id] for t in chosen}

    losses = run_adaptive(plan(PAPER).trials, Adaptive(seed_budgets=2, rungs=5), train)
    ladders = by_budget(plan(PAPER).trials)
    budgets = list(ladders)
    # the seeds: the whole ladder of both, at once
    assert asked[0] == [t.id for b in budgets[:2] for t in ladders[b]]
    for budget in budgets[2:]:
        mine = [t for t in ladders[budget] if t.id in losses]
        assert 5 <= len(mine) < len(ladders[budget])
        # the true optimum of the law at this budget is bracketed by what was trained
        best = min(mine, key=lambda t: losses[t.id])
        assert mine[0].params < best.params < mine[-1].params
        n_star = 0.0009 * budget**0.5681  # the default law's N*(C)
        assert mine[0].params < n_star < mine[-1].params
    again = run_adaptive(plan(PAPER).trials, Adaptive(seed_budgets=2, rungs=5), train)
    assert again == losses  # the same losses give the same decisions: a restart repeats them


def test_the_full_strategy_simulates_as_the_forecast_does_and_wsd_only_changes_compute() -> None:
    law = Law()
    full = simulate_strategy(PAPER, law, 0.005, 6, 0)
    grid = simulate(PAPER, law, 0.005, 6, 0)["parabola"]
    assert np.allclose(full.estimates.value["params"], grid.value["params"])
    wsd = simulate_strategy(PAPER, law, 0.005, 6, 0, wsd=Wsd(0.2))
    assert np.array_equal(wsd.estimates.value["params"], full.estimates.value["params"])
    assert np.allclose(wsd.compute / full.compute, 0.8 * 6 / 11 + 0.2, atol=0.003)
    adaptive = simulate_strategy(PAPER, law, 0.005, 6, 0, adaptive=Adaptive(rungs=5))
    assert (adaptive.trials < full.trials).all()
    assert (adaptive.compute < 0.6 * full.compute).all()
    assert np.isfinite(adaptive.estimates.value["params"]).all()
    assert math.isclose(full.trials[0], len(plan(PAPER).trials))


def test_strategies_are_compared_on_the_same_law_and_noise() -> None:
    rows = compare_strategies(PAPER, Law(), 0.005, 8, 0)
    by = {r.strategy.name: r for r in rows}
    full, wsd = by["full grid"], by["wsd branches (cooldown 0.2)"]
    assert (full.compute, full.equal_precision, full.budgets, full.trials) == (1.0, 1.0, 6, 84.0)
    assert full.exponent is not None
    assert abs(full.exponent.bias) < 0.05
    assert wsd.compute == pytest.approx(0.8 * 6 / 11 + 0.2, abs=0.003)
    assert wsd.equal_precision == pytest.approx(wsd.compute)  # the same losses, the same scatter
    dense = by["wsd branches, 2x budgets"]
    assert (dense.budgets, dense.trials) == (12, 168.0)
    adaptive = by["adaptive ladder (5 rungs, stride 3)"]
    assert adaptive.trials < 84
    text = format_strategies(rows, 8, 0.005)
    assert "wsd branches (cooldown 0.2)          6   84.0    0.64x" in text


def test_a_branch_plan_gives_each_rung_one_stable_run_and_each_trial_its_cooldown() -> None:
    p = plan(PAPER)
    stable, branches = branch_plan(p.trials, Wsd(0.2), warmup_fraction=0.05)
    assert sorted(b.trial.id for b in branches) == sorted(t.id for t in p.trials)
    for b in branches:
        run = stable[b.trial.rung]
        assert b.branch_step in run.branch_points
        # where the trial's own WSD schedule starts its cooldown: the prefix is the stable run's
        cfg = TrainConfig(
            model=DiTConfig("in-context", 2, 128, 2),
            steps=b.trial.steps,
            global_batch_size=b.trial.batch_size,
            schedule="wsd",
            decay_fraction=0.2,
            warmup_steps=run.warmup_steps,
        )
        constant = dataclasses.replace(cfg, schedule="constant")
        steps = range(b.branch_step)
        assert [cfg.lr_multiplier(s) for s in steps] == [constant.lr_multiplier(s) for s in steps]
        assert cfg.lr_multiplier(b.branch_step) < 1.0
    for rung, run in stable.items():
        mine = [b for b in branches if b.trial.rung == rung]
        assert run.steps == max(b.branch_step for b in mine)
        shortest = min(b.trial.steps for b in mine)
        assert run.warmup_steps == round(0.05 * shortest)
    # its compute is what wsd_flops charges: the stable runs once, plus each cooldown
    by_rung = {t.rung: t for t in p.trials}
    charged = sum(
        run.steps * by_rung[r].batch_size * by_rung[r].flops_exact / by_rung[r].samples
        for r, run in stable.items()
    ) + sum((b.trial.steps - b.branch_step) * b.trial.flops_exact / b.trial.steps for b in branches)
    assert charged == pytest.approx(wsd_flops(p.trials, Wsd(0.2)), rel=2e-3)


def test_a_branch_plan_refuses_what_one_stable_run_cannot_serve() -> None:
    t = plan(PAPER).trials[0]
    other = dataclasses.replace(t, id="x", budget=t.budget * 2, batch_size=t.batch_size * 2)
    with pytest.raises(ValueError, match="one batch size"):
        branch_plan([t, other], Wsd(0.2), 0.05)
    with pytest.raises(ValueError, match="reaches a cooldown"):
        branch_plan([t], Wsd(0.6), 0.5)  # warmup to half the steps, cooldown from 40%


def with_strategy(spec: api.ScalingSweepSpec, **strategy: object) -> api.ScalingSweepSpec:
    return api.parse_spec({**spec.to_wire(), "strategy": strategy})


def test_the_graph_chains_each_stable_run_and_hangs_each_branch_at_its_cooldown() -> None:
    s = with_strategy(PAPER, wsdBranches={"cooldown": 0.2})
    p = plan(s)
    g = graph(s, p.trials)
    stable = [n for n in g.nodes if n.kind == "stable"]
    branches = [n for n in g.nodes if n.kind == "branch"]
    assert sorted(n.id for n in branches) == sorted(t.id for t in p.trials)
    for n in stable:  # a segment continues the one before it, to its own end
        before = g.by_id[n.after] if n.after else None
        assert n.start_step == (before.trial.steps if before else 0) < n.trial.steps
        assert before is None or before.run == n.run
    for n in branches:  # a branch waits for the segment that ends where its cooldown starts
        parent = g.by_id[n.after or ""]
        assert (parent.kind, parent.run, parent.trial.steps) == ("stable", n.run, n.branch_step)
        assert n.branch_step == decay_start(n.trial.steps, 0.2)
    # the prefix is charged once: every node's own compute sums to the strategy's
    # (the paper's sweep counts FLOPs as 6ND: the same fraction of the grid as exact FLOPs)
    assert g.full_grid_flops == sum(t.flops for t in p.trials)
    fraction = wsd_flops(p.trials, Wsd(0.2)) / sum(t.flops_exact for t in p.trials)
    assert sum(n.own_flops for n in g.nodes) / g.full_grid_flops == pytest.approx(fraction, 2e-3)
    assert graph(PAPER, p.trials).nodes == tuple(Node(t, own_flops=t.flops) for t in p.trials)


def test_node_configs_continue_one_stable_run_and_branch_from_its_checkpoints() -> None:
    s = with_strategy(PAPER, wsdBranches={"cooldown": 0.2, "decayShape": "1-sqrt"})
    g = graph(s, plan(s).trials)
    branch = next(n for n in g.nodes if n.kind == "branch" and n.trial.budget == 6e18)
    parent = g.by_id[branch.after or ""]
    first = g.by_id[next(n.id for n in g.nodes if n.run == branch.run and n.after is None)]
    b = node_config(s, "sw", branch, "/ckpt/stable", checkpoint="/ckpt/own")
    seg = node_config(s, "sw", parent, "/ckpt/stable", checkpoint="/ckpt/seg")
    seg0 = node_config(s, "sw", first, "/ckpt/stable", checkpoint="/ckpt/seg0")
    run = f"/ckpt/stable/{branch.run}"
    assert (seg.checkpoint, seg0.checkpoint, b.branch_from) == (run, run, run)
    assert b.checkpoint == "/ckpt/own"  # a branch's own checkpoints: its resumes start there
    assert seg.steps == b.branch_step
    assert seg.branch_points == (b.branch_step,)
    assert seg.warmup_steps == seg0.warmup_steps == b.warmup_steps
    assert (seg.schedule, b.schedule, b.decay_shape) == ("constant", "wsd", "1-sqrt")
    before = range(b.branch_step)
    assert [b.lr_multiplier(i) for i in before] == [seg.lr_multiplier(i) for i in before]
    # 1 - sqrt: the cooldown's first step already falls by sqrt(1/len), to zero at the end
    cooldown = b.steps - b.branch_step
    assert b.lr_multiplier(b.branch_step) == pytest.approx(1 - math.sqrt(1 / cooldown))
    assert b.lr_multiplier(b.steps - 1) == 0.0
    with pytest.raises(ValueError, match="shared"):
        node_config(s, "sw", branch, None, checkpoint="/tmp/x")
    plain = graph(PAPER, plan(PAPER).trials).nodes[0]
    assert node_config(PAPER, "sw", plain, None) == train_config(PAPER, "sw", plain.trial)


def test_the_adaptive_ladder_chooses_from_finished_losses_and_stops_at_a_failed_rung() -> None:
    trials = plan(PAPER).trials  # adjacent rungs (stride 1): each widening is one step
    ladder = by_budget(trials)
    budgets = sorted(ladder)
    law = Law()  # the paper's
    losses = {t.id: float(law(t.params, t.tokens)) for t in trials}
    seeds = {t.id for b in budgets[:2] for t in ladder[b]}
    nothing = adapt(trials, Adaptive(2, 5, 1), {}, ())
    assert (nothing.chosen, nothing.skipped, nothing.settled) == (seeds, frozenset(), ())
    done = adapt(trials, Adaptive(2, 5, 1), {i: losses[i] for i in seeds}, seeds)
    assert done.settled == tuple(budgets[:2])
    third = {t.id for t in ladder[budgets[2]]} & done.chosen
    assert len(third) == 5
    assert done.chosen == seeds | third
    # the same losses, the same choice: what a restarted driver decides
    assert adapt(trials, Adaptive(2, 5, 1), {i: losses[i] for i in seeds}, seeds) == done
    # the window's smallest rung is best: the rung below it is added, and the budget stays open
    window = sorted((t for t in ladder[budgets[2]] if t.id in third), key=lambda t: t.params)
    below = ladder[budgets[2]][ladder[budgets[2]].index(window[0]) - 1]
    known = {
        **{i: losses[i] for i in seeds},
        **{t.id: 1.0 + 0.01 * i for i, t in enumerate(window)},
    }
    widened = adapt(trials, Adaptive(2, 5, 1), known, seeds | third)
    assert widened.chosen == done.chosen | {below.id}
    assert budgets[2] not in widened.settled
    # that rung failed for good (no loss): the budget settles rather than widening past it
    settled = adapt(trials, Adaptive(2, 5, 1), known, seeds | third | {below.id})
    assert budgets[2] in settled.settled
    assert below.id in settled.chosen
    assert settled.skipped >= {t.id for t in ladder[budgets[2]]} - settled.chosen
