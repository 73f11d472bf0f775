"""Packing small trials onto one GPU: how many share it (MFU and memory), the memory estimate
against the trainer's measured peaks, and the engine's slots in shares."""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import pytest

from isoflop import api
from isoflop.sweep.engine import TrialState, decide
from isoflop.sweep.packing import Packing, estimated_memory_gib, sweep_mfu
from isoflop.sweep.plan import H100_BF16_PEAK_FLOPS, H100_MFU_CURVE, Trial, plan

ROOT = Path(__file__).resolve().parents[2]
PAPER = api.load_sweep(ROOT / "examples" / "paper-in-context.yaml").spec


def packed(
    spec: api.ScalingSweepSpec, gpu_memory_gib: float = 80, **packing: object
) -> api.ScalingSweepSpec:
    resources = spec.resources.model_copy(
        update={"packing": api.PackingSpec(**packing), "gpu_memory_gib": gpu_memory_gib}
    )
    return spec.model_copy(update={"resources": resources})


def measured_trial(row: dict[str, object]) -> Trial:
    """A trial shaped like one bench_trainer row (paper in-context rungs: 256 + 77 tokens)."""
    p = next(t for t in plan(PAPER).trials)
    return Trial(
        **{  # type: ignore[arg-type]
            **p.__dict__,
            "params": row["params"],
            "depth": row["depth"],
            "width": row["width"],
            "batch_size": row["batch"],
            "tokens_per_sample": 256 + 77,
        }
    )


def test_the_memory_estimate_matches_the_trainers_measured_peaks() -> None:
    rows = [
        json.loads(line)
        for line in (ROOT / "benchmarks/results/trainer-h100-2026-11-25.jsonl")
        .read_text()
        .split("\n")
        if line.strip()
    ]
    rows = [r for r in rows if r["mode"] == "compiled" and r["family"] == "in-context"]
    assert len(rows) >= 6
    for r in rows:
        ratio = estimated_memory_gib(measured_trial(r)) / r["peak_memory_gib"]
        if r["params"] > 100e6:
            assert ratio == pytest.approx(1.0, abs=0.03), r
        else:  # the smallest: over, the safe side for packing
            assert 1.0 <= ratio < 1.5, r


def test_small_rungs_pack_many_to_a_gpu_and_large_ones_none() -> None:
    trials = plan(PAPER).trials
    assert {Packing.of(PAPER).per_gpu(t) for t in trials} == {1}  # unset: never packed
    policy = Packing.of(packed(PAPER))
    by_size = sorted({(t.params, policy.per_gpu(t)) for t in trials if t.budget == 1e18})
    counts = [k for _, k in by_size]
    assert counts == sorted(counts, reverse=True)  # larger rungs pack fewer
    assert counts[0] == 8  # 0.78M parameters: at most maxTrialsPerGpu
    assert counts[-1] == 1  # 253M at 36% MFU alone: the GPU is busy
    smallest = next(t for t in trials if t.params == by_size[0][0])
    assert policy.gpu_share(smallest) == Fraction(1, 8)  # an eighth of one GPU
    assert policy.share(smallest) == Fraction(1, 64)  # of a slot: one trial's 8 GPUs unpacked
    assert policy.ranks(smallest) == 1
    largest = max(trials, key=lambda t: t.params)
    assert (policy.gpu_share(largest), policy.share(largest), policy.ranks(largest)) == (1, 1, 8)
    # floor(saturation / MFU alone): at 5.2M parameters (4.65% alone) 0.4 / 0.0465 -> 8
    five = next(t for t in trials if t.budget == 1e18 and 5e6 < t.params < 5.5e6)
    assert Packing.of(packed(PAPER, max_trials_per_gpu=64)).per_gpu(five) == 8
    # memory caps what MFU allows: 4 GiB GPUs hold few
    tight = Packing.of(packed(PAPER, gpu_memory_gib=4))
    for t in trials:  # each at the micro-batch of the MFU figures (64)
        k = tight.per_gpu(t)
        assert k == 1 or k * estimated_memory_gib(t, 64) <= 0.9 * 4
    assert tight.per_gpu(smallest) == 5  # memory, not MFU (8), decides
    # CPU trials (gpusPerNode 0) are never packed
    cpu = packed(PAPER).model_copy(
        update={"resources": packed(PAPER).resources.model_copy(update={"gpus_per_node": 0})}
    )
    assert {Packing.of(cpu).per_gpu(t) for t in trials} == {1}


def test_the_engine_counts_packed_trials_as_shares_of_a_slot() -> None:
    single = PAPER.resources.model_copy(update={"gpus_per_node": 1})
    s = packed(PAPER.model_copy(update={"resources": single}), max_trials_per_gpu=4)
    s = s.model_copy(update={"parallelism": 2})
    p = plan(s)
    policy = Packing.of(s)
    first = decide(s, p, {}).launches
    assert sum(policy.share(lc.trial) for lc in first) <= 2
    # in order of size: three quarters (d02-d04), a third (d05), a half (d06) fill 1.58 of the
    # 2 slots; the next half would overfill them
    assert [policy.share(lc.trial) for lc in first] == [Fraction(1, 4)] * 3 + [
        Fraction(1, 3),
        Fraction(1, 2),
    ]
    unpacked = decide(PAPER.model_copy(update={"parallelism": 2}), plan(PAPER), {}).launches
    assert len(unpacked) == 2
    # eight GPUs a trial: a slot is eight GPUs; the smallest budget's six packed rungs take
    # 3 x 1/32 + 1/24 + 2 x 1/16 of it, and its seventh rung, unpacked, needs a whole slot
    wide = packed(PAPER, max_trials_per_gpu=4).model_copy(update={"parallelism": 1})
    got = decide(wide, plan(wide), {}).launches
    wide_policy = Packing.of(wide)
    assert [wide_policy.share(lc.trial) for lc in got] == [Fraction(1, 32)] * 3 + [
        Fraction(1, 24),
        Fraction(1, 16),
        Fraction(1, 16),
    ]
    assert (
        decide(wide, plan(wide), {lc.trial.id: TrialState("Succeeded", 1, 1.0) for lc in got})
        .launches[0]
        .trial.rung
        == "d08"
    )
    # in order: once a whole-slot trial does not fit, nothing after it overtakes it
    states = {t.id: TrialState("Succeeded", 1, 1.0) for t in p.trials if policy.share(t) < 1}
    big = [t for t in p.trials if policy.share(t) == 1]
    running = {big[0].id: TrialState("Running", 1)}
    launches = decide(s, p, {**states, **running}).launches
    assert [lc.trial.id for lc in launches] == [big[1].id]  # one slot left: one whole trial


def test_the_sweep_estimate_says_what_packing_buys() -> None:
    trials = plan(PAPER).trials
    none = sweep_mfu(trials, Packing.of(PAPER), H100_BF16_PEAK_FLOPS)
    assert none["gpu_hours_packed"] == pytest.approx(none["gpu_hours_alone"])
    some = sweep_mfu(trials, Packing.of(packed(PAPER)), H100_BF16_PEAK_FLOPS)
    assert some["gpu_hours_alone"] == pytest.approx(none["gpu_hours_alone"])
    assert some["mfu_packed"] > 2 * some["mfu_alone"]
    assert some["mfu_alone"] == pytest.approx(
        sum(t.flops_exact for t in trials) / (some["gpu_hours_alone"] * 3600 * H100_BF16_PEAK_FLOPS)
    )


def test_plan_says_which_rungs_pack_and_what_the_sweep_would_cost() -> None:
    from isoflop.cli.plan import packing_text

    single = PAPER.resources.model_copy(update={"gpus_per_node": 1})
    s = packed(PAPER.model_copy(update={"resources": single}))
    p = plan(s)
    assert packing_text(PAPER, plan(PAPER), H100_MFU_CURVE, H100_BF16_PEAK_FLOPS) is None
    text = packing_text(s, p, H100_MFU_CURVE, H100_BF16_PEAK_FLOPS)
    assert text is not None
    assert "6 of 14 rungs share GPUs (d02 x8, d03 x8, d04 x8, d05 x3, d06 x2, d07 x2)" in text
    est = sweep_mfu(list(p.trials), Packing.of(s), H100_BF16_PEAK_FLOPS)
    assert f"about {est['gpu_hours_packed']:.3g} GPU-hours in place of " in text
    assert f"sweep MFU {est['mfu_alone']:.1%} -> {est['mfu_packed']:.1%}" in text
    # each packed rung's trials share a GPU k ways: its GPU-hours are 1/k of alone
    small = next(t for t in p.trials if t.rung == "d02")
    assert Packing.of(s).gpu_share(small) == Fraction(1, 8)


def test_the_automatic_micro_batch_fits_the_gpu_or_its_packed_share() -> None:
    from isoflop.sweep.trials import auto_micro_batch

    single = PAPER.resources.model_copy(update={"gpus_per_node": 1})
    one = PAPER.model_copy(update={"resources": single})
    trials = [t for t in plan(one).trials if t.budget == 1e18]
    micro = {t.rung: auto_micro_batch(one, t) for t in trials}
    assert micro["d02"] is None  # the whole batch of 1024 fits: left to the trainer
    assert micro["d15"] == 256  # 253M parameters: 1024 would need 178 GiB
    for t in trials:
        m = micro[t.rung] or t.batch_size
        assert estimated_memory_gib(t, m) <= 0.9 * 80
        assert m == t.batch_size or estimated_memory_gib(t, 2 * m) > 0.9 * 80  # the largest
    # eight GPUs a trial: each rank holds 128 of the 1024, which fits every rung
    assert {auto_micro_batch(PAPER, t) for t in plan(PAPER).trials} == {None}
    # a packed trial has 1/k of the memory
    s = packed(one)
    d05 = next(t for t in plan(s).trials if t.rung == "d05")
    k = Packing.of(s).per_gpu(d05)
    m = auto_micro_batch(s, d05) or d05.batch_size
    assert k > 1
    assert k * estimated_memory_gib(d05, m) <= 0.9 * 80


def test_the_sweep_benchmark_weights_every_rung_by_equal_flops() -> None:
    from benchmarks.bench_sweep_gpu import harmonic

    # a budget spends equal FLOPs on each rung: at MFUs 0.05 and 0.40 the time goes 8:1, so the
    # sweep runs at 2 / (1/0.05 + 1/0.4) = 0.0889, far below the mean 0.225
    assert harmonic([0.05, 0.40]) == pytest.approx(2 / (20 + 2.5))
    assert harmonic([0.3, 0.3, 0.3]) == pytest.approx(0.3)
    assert math.isnan(harmonic([0.3, 0.0]))  # a rung that measured nothing: no figure


def test_compile_mode_auto_gives_cuda_graphs_to_the_launch_bound_rungs_only() -> None:
    from isoflop.sweep.trials import compile_mode, train_config

    training = PAPER.training.model_copy(update={"compile_mode": "auto"})
    s = PAPER.model_copy(update={"training": training})
    modes = {t.rung: compile_mode(s, t) for t in plan(s).trials}
    small = {r for r, m in modes.items() if m == "reduce-overhead"}
    # under 20% MFU alone on the H100 curve: up to 26M parameters (d07), not 39M (d08)
    assert small == {f"d{d:02d}" for d in range(2, 8)}
    assert {m for r, m in modes.items() if r not in small} == {None}
    t = plan(s).trials[0]
    assert train_config(s, "s", t).compile_mode == "reduce-overhead"
    assert train_config(PAPER, "s", t).compile_mode is None  # unset: torch.compile's default
