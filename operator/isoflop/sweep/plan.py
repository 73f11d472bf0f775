"""The isoFLOP planner: budgets x ladder -> trials with steps, samples, tokens and exact FLOPs."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import numpy as np

from isoflop import api
from isoflop.api import ScalingSweepSpec
from isoflop.sweep.families import class_configs
from isoflop_trainer.config import FAMILIES, PEAK_BF16_FLOPS, DiTConfig, ModelConfig

H100_BF16_PEAK_FLOPS = PEAK_BF16_FLOPS["H100"]
DEFAULT_MFU = 0.40


@dataclass(frozen=True)
class MfuCurve:
    """Model-FLOPs utilisation by model size, for GPU-hour estimates: small DiTs use a GPU far less
    than large ones (launch overheads, narrow matmuls). Interpolated linearly in log(params) between
    measured sizes, and held at the end values beyond them."""

    points: tuple[tuple[float, float], ...]  # (params, mfu), params ascending
    source: str

    def at(self, params: float) -> float:
        sizes, mfus = zip(*self.points, strict=True)
        return float(np.interp(math.log(params), [math.log(n) for n in sizes], mfus))

    @classmethod
    def flat(cls, mfu: float) -> MfuCurve:
        return cls(((1.0, mfu),), f"{mfu:.0%} MFU at every size")

    @classmethod
    def from_jsonl(cls, text: str, source: str) -> MfuCurve:
        """`bench_trainer.py` output (or any JSON lines with `params` and `mfu`); of several lines
        for one size, the best (compiled, larger batch) is kept. ValueError names a bad line."""
        best: dict[float, float] = {}
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                params, mfu = float(row["params"]), float(row["mfu"])
            except (ValueError, KeyError, TypeError):
                raise ValueError(
                    f"{source} line {number}: expected JSON with numbers 'params' and 'mfu'"
                ) from None
            if not (params > 0 and 0 < mfu <= 1):
                raise ValueError(f"{source} line {number}: params > 0 and 0 < mfu <= 1 needed")
            best[params] = max(mfu, best.get(params, 0.0))
        if not best:
            raise ValueError(f"{source} holds no measurement")
        return cls(tuple(sorted(best.items())), f"the MFU by model size measured in {source}")


# The trainer's own H100 figures (benchmarks/results/trainer-h100-2026-11-25.jsonl: bf16,
# torch.compile, batch 64, paper ladder): 4.7% at 5.2M parameters to 42% at 793M.
H100_MFU_CURVE = MfuCurve(
    (
        (5_202_448, 0.0465),
        (130_125_328, 0.3245),
        (252_832_336, 0.3630),
        (435_497_488, 0.3818),
        (792_963_088, 0.4210),
    ),
    "the MFU the trainer measured by model size on an H100 (bf16, compiled, batch 64)",
)


@dataclass(frozen=True)
class Rung:
    """One model size of the ladder."""

    name: str
    config: ModelConfig


@dataclass(frozen=True)
class Trial:
    """One (budget, rung) training run, sized to spend the budget."""

    id: str
    budget: float
    rung: str
    depth: int
    width: int
    heads: int
    params: int
    non_embedding_params: int
    tokens_per_sample: int
    flops_per_sample: int  # under the sweep's accounting
    batch_size: int
    steps: int
    samples: int
    tokens: int
    flops: int  # spent, under the sweep's accounting (what the budget is compared with)
    flops_exact: int
    flops_6nd: int
    replicate: int = 0  # the k-th seed of this (budget, rung): training.seed + k
    # its peak learning rate: a tuning trial's rate, or a grid trial's from the tuning law;
    # None: training.learningRate under its scaling rule (isoflop.sweep.trials.learning_rate)
    learning_rate: float | None = None
    tunes: Literal["rate", "batch"] | None = None  # a tuning trial: what it varies

    @property
    def rounding(self) -> float:
        """Relative difference between the FLOPs spent and the budget (steps are whole)."""
        return self.flops / self.budget - 1.0

    def gpu_hours(
        self, mfu: float | MfuCurve = H100_MFU_CURVE, peak_flops: float = H100_BF16_PEAK_FLOPS
    ) -> float:
        """Estimated GPU-hours for the exact FLOPs at a model-FLOPs utilisation (one figure, or
        the curve's at this trial's size) and GPU peak."""
        m = mfu.at(self.params) if isinstance(mfu, MfuCurve) else mfu
        return self.flops_exact / (m * peak_flops) / 3600.0


@dataclass(frozen=True)
class Infeasible:
    """A (budget, rung) pair that cannot be trained as asked, and why."""

    id: str
    budget: float
    rung: str
    params: int
    steps: int
    reason: str


@dataclass(frozen=True)
class Plan:
    accounting: str
    trials: tuple[Trial, ...]
    infeasible: tuple[Infeasible, ...]
    tuning: tuple[Trial, ...] = ()  # the tuning stage's trials (isoflop.sweep.tuning)

    def trial(self, trial_id: str) -> Trial:
        for t in self.trials:
            if t.id == trial_id:
                return t
        raise KeyError(trial_id)

    def to_json(
        self, mfu: float | MfuCurve = H100_MFU_CURVE, peak_flops: float = H100_BF16_PEAK_FLOPS
    ) -> dict[str, Any]:
        curve = mfu if isinstance(mfu, MfuCurve) else MfuCurve.flat(mfu)
        return {
            "accounting": self.accounting,
            "mfu": {"source": curve.source, "points": [list(p) for p in curve.points]},
            "peakFlops": peak_flops,
            "gpuHours": sum(t.gpu_hours(curve, peak_flops) for t in self.trials),
            "trials": [
                {
                    **asdict(t),
                    "rounding": t.rounding,
                    "mfu": curve.at(t.params),
                    "gpu_hours": t.gpu_hours(curve, peak_flops),
                }
                for t in self.trials
            ],
            "infeasible": [asdict(i) for i in self.infeasible],
            "tuning": [
                {**asdict(t), "gpu_hours": t.gpu_hours(curve, peak_flops)} for t in self.tuning
            ],
        }


def format_flops(x: float) -> str:
    """3e+17 -> '3e17', for tables."""
    return f"{x:.3g}".replace("e+", "e")


def budget_tag(budget: float) -> str:
    """A short, DNS-safe, stable name for a budget: 1e17 -> '1e17', 1.5e21 -> '1p5e21'."""
    mantissa, exponent = f"{budget:.5e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".").replace(".", "p")
    return f"{mantissa}e{int(exponent)}".replace("-", "m")


def trial_id(budget: float, rung: str, replicate: int = 0) -> str:
    """Deterministic: depends only on the budget, the rung and the replicate, so adding any of
    them keeps old IDs (the first replicate has no suffix)."""
    return f"{budget_tag(budget)}-{rung}" + (f"-r{replicate}" if replicate else "")


def base_width(spec: ScalingSweepSpec) -> int:
    """training.baseWidth, or the narrowest rung's width: where learningRate holds as given
    under width scaling and muP."""
    m = spec.model
    if spec.training.base_width:
        return spec.training.base_width
    if m.is_class_family:  # as the model check measured them
        return min(r.config.width for r in class_ladder(spec))
    widths = [m.width_per_depth * depth for depth in m.depths] + [c.width or 0 for c in m.configs]
    return min(widths)


def rung_config(spec: ScalingSweepSpec, depth: int, width: int, heads: int) -> DiTConfig:
    """The DiT of one rung: its size from the ladder, everything else from the spec."""
    m, d = spec.model, spec.data
    channels, height, side = d.latent_shape
    mup = spec.training.parameterization == "mup"
    family = next(f for f in FAMILIES if f == m.family)  # a class family's rungs: ClassConfigs
    return DiTConfig(
        family=family,
        depth=depth,
        width=width,
        heads=heads,
        mlp_ratio=m.mlp_ratio,
        patch_size=m.patch_size,
        latent_channels=channels,
        latent_height=height,
        latent_width=side,
        text_length=d.text_length,
        text_dim=d.text_dim,
        timestep_conditioning=m.timestep_conditioning,
        qk_norm=m.qk_norm,
        parameterization=spec.training.parameterization,
        base_width=base_width(spec) if mup else None,
    )


def ladder(spec: ScalingSweepSpec) -> list[Rung]:
    """The model sizes of the sweep, smallest first (a class family's as its model check
    measured them: ValueError for a rung it has not measured)."""
    m = spec.model
    if m.is_class_family:
        return sorted(class_ladder(spec), key=lambda r: (r.config.params().total, r.name))
    rungs = [
        Rung(f"d{depth:02d}", rung_config(spec, depth, w, w // m.head_dim))
        for depth in m.depths
        for w in [m.width_per_depth * depth]
    ]
    rungs += [
        Rung(c.name, rung_config(spec, depth, width, c.heads or width // m.head_dim))
        for c in m.configs
        for depth, width in [c.shape]
    ]
    return sorted(rungs, key=lambda r: (r.config.params().total, r.name))


def class_ladder(spec: ScalingSweepSpec) -> list[Rung]:
    have, rungs = spec.model.measures, []
    for name, cfg in class_configs(spec):
        measure = have.get(cfg.digest())
        if measure is None:
            raise ValueError(
                f"spec.model: rung {name} of {cfg.transformer} has no model check yet (its "
                "parameters and FLOPs are measured by building it in the trainer's environment)"
            )
        rungs.append(Rung(name, replace(cfg, measure=measure)))
    return rungs


def sized(
    spec: ScalingSweepSpec,
    budget: float,
    rung: Rung,
    tid: str,
    replicates: int = 1,
    batch: int | None = None,
) -> list[Trial] | Infeasible:
    """One rung at one budget: its trials (one per replicate) with the steps that spend the
    budget at `batch` (default training.globalBatchSize), or why it cannot be trained (fewer
    steps than minSteps, less than one batch)."""
    cfg = rung.config
    batch = batch or spec.training.global_batch_size
    params = cfg.params()
    per_sample = cfg.training_flops_per_sample(spec.flops_accounting)
    steps = round(budget / (per_sample * batch))
    if steps < 1:
        reason = (
            f"the budget buys {budget / per_sample:.3g} samples, less than one batch of {batch}"
        )
        return Infeasible(tid, budget, rung.name, params.total, steps, reason)
    if steps < spec.training.min_steps:
        reason = f"{steps} steps of batch {batch}, fewer than minSteps {spec.training.min_steps}"
        return Infeasible(tid, budget, rung.name, params.total, steps, reason)
    samples = steps * batch
    return [
        Trial(
            id=tid + (f"-r{replicate}" if replicate else ""),
            budget=budget,
            rung=rung.name,
            depth=cfg.depth,
            width=cfg.width,
            heads=cfg.heads,
            params=params.total,
            non_embedding_params=params.non_embedding,
            tokens_per_sample=cfg.tokens_per_sample,
            flops_per_sample=per_sample,
            batch_size=batch,
            steps=steps,
            samples=samples,
            tokens=samples * cfg.tokens_per_sample,
            flops=samples * per_sample,
            flops_exact=samples * cfg.flops_per_sample().total,
            flops_6nd=samples * cfg.flops_per_sample_6nd(),
            replicate=replicate,
        )
        for replicate in range(replicates)
    ]


def resized(trial: Trial, batch: int) -> Trial:
    """The same trial at another global batch: the steps that come nearest its samples (at
    least one), and the samples, tokens and FLOPs those steps train."""
    steps = max(round(trial.samples / batch), 1)
    samples = steps * batch
    return replace(
        trial,
        batch_size=batch,
        steps=steps,
        samples=samples,
        tokens=samples * trial.tokens_per_sample,
        flops=samples * trial.flops_per_sample,
        flops_exact=samples * (trial.flops_exact // trial.samples),
        flops_6nd=samples * (trial.flops_6nd // trial.samples),
    )


# -- the tuning stage's trials (spec.tuning; its decisions are isoflop.sweep.tuning's) ---------

TUNING_PREFIX = "tune-"
TUNING_STEPS = 2  # the default grid: training.learningRate x 2^k, k = -2..2
MAX_RATE = 1.0  # the API's bound on a learning rate


def is_tuning(trial_id: str) -> bool:
    return trial_id.startswith(TUNING_PREFIX)


def tuning_id(budget: float, rung: str, rate: float) -> str:
    """tune-3e10-d2w40-lr1em3: deterministic, DNS-safe, and a new rate keeps the old IDs."""
    return f"{TUNING_PREFIX}{budget_tag(budget)}-{rung}-lr{budget_tag(rate)}"


def batch_tuning_id(budget: float, rung: str, batch: int) -> str:
    """tune-3e10-d02-bs64: a batch-size trial of the stage."""
    return f"{TUNING_PREFIX}{budget_tag(budget)}-{rung}-bs{batch}"


def three_digits(x: float) -> float:
    return float(f"{x:.3g}")


@dataclass(frozen=True)
class TuningGrid:
    """The stage's budgets, rungs and rates: the rates ascending, the requested ones from index
    `first` to `last`, the widened steps beyond them."""

    budgets: tuple[float, ...]
    rungs: tuple[str, ...]
    rates: tuple[float, ...]
    first: int
    last: int
    batches: tuple[int, ...] = ()  # spec.tuning.globalBatchSizes, widened likewise


def requested_rates(spec: api.ScalingSweepSpec) -> list[float]:
    tuning = spec.tuning
    assert tuning is not None
    if tuning.learning_rates:
        return sorted(tuning.learning_rates)
    base = spec.training.learning_rate
    steps = range(-TUNING_STEPS, TUNING_STEPS + 1)
    return sorted({r for k in steps if (r := three_digits(base * 2.0**k)) <= MAX_RATE})


def requested_batches(spec: api.ScalingSweepSpec) -> list[int]:
    tuning = spec.tuning
    assert tuning is not None
    return sorted(tuning.global_batch_sizes)


def batch_unit(spec: api.ScalingSweepSpec) -> int:
    """What every global batch the tuning stage sets must be a multiple of: the micro-batch
    (training.microBatchSize where set) and the trial's GPUs (the trainer splits the batch
    evenly over its processes)."""
    r = spec.resources
    return math.lcm(spec.training.micro_batch_size or 1, max(r.gpus_per_node, 1) * r.nodes)


MAX_BATCH = 1 << 20  # the API's bound on a global batch


def beyond_batches(
    batches: Sequence[int], steps: int, side: Literal["low", "high"], unit: int
) -> list[int]:
    """`steps` more batch sizes past one end of an ascending grid, at the ratio of its last step
    there, as multiples of `unit` (none below one unit or above the API's bound, no repeats)."""
    edge = batches[0] if side == "low" else batches[-1]
    ratio = batches[1] / batches[0] if side == "low" else batches[-1] / batches[-2]
    out = set()
    for k in range(1, steps + 1):
        x = edge / ratio**k if side == "low" else edge * ratio**k
        b = max(unit, unit * round(x / unit))
        if b <= MAX_BATCH and b not in batches:
            out.add(b)
    return sorted(out)


def beyond(rates: Sequence[float], steps: int, side: Literal["low", "high"]) -> list[float]:
    """`steps` more rates past one end of an ascending grid, at the ratio of its last step there
    (3 significant digits; none above the API's bound)."""
    if side == "low":
        ratio = rates[1] / rates[0]
        return sorted(three_digits(rates[0] / ratio**k) for k in range(1, steps + 1))
    ratio = rates[-1] / rates[-2]
    out = [three_digits(rates[-1] * ratio**k) for k in range(1, steps + 1)]
    return [r for r in out if r <= MAX_RATE]


def tuning_grid(spec: api.ScalingSweepSpec, rungs: Sequence[Rung]) -> TuningGrid | None:
    """The stage's grid, None without spec.tuning. ValueError names a rung that a tuning budget
    cannot train, or a stage with no rung to tune."""
    tuning = spec.tuning
    if tuning is None:
        return None
    budgets = tuple(sorted(tuning.budgets or {min(spec.budgets) / 2, min(spec.budgets)}))
    feasible = [
        r
        for r in rungs
        if all(not isinstance(sized(spec, b, r, r.name), Infeasible) for b in budgets)
    ]
    if tuning.rungs:
        for name in tuning.rungs:
            rung = next(r for r in rungs if r.name == name)
            for b in budgets:
                got = sized(spec, b, rung, name)
                if isinstance(got, Infeasible):
                    raise ValueError(
                        f"spec.tuning.rungs: {name} cannot train at the tuning budget "
                        f"{format_flops(b)}: "
                        f"{got.reason}"
                    )
        chosen = tuple(r.name for r in rungs if r.name in tuning.rungs)  # ascending size
    elif not feasible:
        raise ValueError(
            f"spec.tuning: no rung of the ladder can train at every tuning budget "
            f"({', '.join(format_flops(b) for b in budgets)}): raise spec.tuning.budgets"
        )
    else:
        picks = sorted({0, (len(feasible) - 1) // 2, len(feasible) - 1})
        chosen = tuple(feasible[i].name for i in picks)
    asked = requested_rates(spec)
    low = beyond(asked, tuning.widen, "low")
    high = beyond(asked, tuning.widen, "high")
    rates = tuple(low + asked + high)
    batches: tuple[int, ...] = ()
    if tuning.global_batch_sizes:
        wanted, unit = requested_batches(spec), batch_unit(spec)
        batches = tuple(
            beyond_batches(wanted, tuning.widen, "low", unit)
            + wanted
            + beyond_batches(wanted, tuning.widen, "high", unit)
        )
    return TuningGrid(budgets, chosen, rates, len(low), len(low) + len(asked) - 1, batches)


def tuning_trials(spec: api.ScalingSweepSpec, rungs: Sequence[Rung]) -> tuple[Trial, ...]:
    """Every trial the stage may train: each tuning budget x rung x rate of the widened grid,
    and where batches are tuned each batch size its steps allow (their rate is the rung's
    optimum, known once its rates are trained: isoflop.sweep.tuning sets it)."""
    g = tuning_grid(spec, rungs)
    if g is None:
        return ()
    by_name = {r.name: r for r in rungs}
    out = []
    for budget in g.budgets:
        for name in g.rungs:
            for rate in g.rates:
                got = sized(spec, budget, by_name[name], tuning_id(budget, name, rate))
                assert not isinstance(got, Infeasible)  # tuning_grid checked every one
                out.append(replace(got[0], learning_rate=rate, tunes="rate"))
            for batch in g.batches:
                tid = batch_tuning_id(budget, name, batch)
                sized_at = sized(spec, budget, by_name[name], tid, batch=batch)
                if not isinstance(sized_at, Infeasible):  # too few steps at this batch
                    out.append(replace(sized_at[0], tunes="batch"))
    return tuple(out)


def plan(spec: ScalingSweepSpec) -> Plan:
    """Size every (budget, rung) trial; list the infeasible ones with the reason; and the tuning
    stage's trials (ValueError: a tuning rung its budgets cannot train)."""
    tags = {budget_tag(b) for b in spec.budgets}
    if len(tags) != len(spec.budgets):
        raise ValueError(
            "spec.budgets: two budgets are too close to tell apart (6 significant digits)"
        )
    if len({budget_tag(b) for b in spec.confirm}) != len(spec.confirm):
        raise ValueError(
            "spec.confirm: two budgets are too close to tell apart (6 significant digits): "
            "they would be one confirmation trial"
        )
    trials: list[Trial] = []
    infeasible: list[Infeasible] = []
    rungs = ladder(spec)
    for budget in sorted(spec.budgets):
        for rung in rungs:
            got = sized(spec, budget, rung, trial_id(budget, rung.name), spec.training.replicates)
            if isinstance(got, Infeasible):
                infeasible.append(got)
            else:
                trials += got
    return Plan(spec.flops_accounting, tuple(trials), tuple(infeasible), tuning_trials(spec, rungs))
