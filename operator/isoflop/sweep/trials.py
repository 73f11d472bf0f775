"""From the plan to the trainer: the TrainConfig of one trial, and the fit of finished trials."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from isoflop import api
from isoflop.sweep.packing import Packing
from isoflop.sweep.plan import H100_MFU_CURVE, Rung, Trial, base_width, ladder, rung_config
from isoflop.sweep.strategy import Node
from isoflop_trainer.config import TrainConfig

if TYPE_CHECKING:
    from isoflop.fit import Analysis


def train_config(spec: api.ScalingSweepSpec, sweep: str, trial: Trial, **paths: Any) -> TrainConfig:
    """The trainer's settings for one trial: its rung, its steps, everything else from the spec."""
    rungs = ladder(spec)
    rung = next((r for r in rungs if r.name == trial.rung), None)
    if rung is None:  # a confirmation run: a model of the family beyond the ladder
        assert not spec.model.is_class_family  # the spec refuses their confirmations
        rung = Rung(trial.rung, rung_config(spec, trial.depth, trial.width, trial.heads))
    t, e = spec.training, spec.evaluation
    return TrainConfig(
        model=rung.config,
        steps=trial.steps,
        global_batch_size=trial.batch_size,
        micro_batch_size=t.micro_batch_size or auto_micro_batch(spec, trial),
        learning_rate=(
            trial.learning_rate  # a tuning trial's, or the tuning law's
            if trial.learning_rate is not None
            else learning_rate(spec, rung.name, rungs, rung.config.width)
        ),
        betas=(t.betas[0], t.betas[1]),
        weight_decay=t.weight_decay,
        warmup_steps=round(t.warmup_fraction * trial.steps),
        schedule=t.schedule,
        decay_fraction=t.decay_fraction,
        grad_clip=t.grad_clip,
        precision=t.precision,
        compile=t.compile,
        compile_mode=compile_mode(spec, trial),
        seed=t.seed + trial.replicate,
        timestep_sampling=t.timestep_sampling,
        text_dropout=t.text_dropout,
        data=spec.data.source,
        validation_data=spec.data.validation_source,
        eval_samples=t.eval_samples,
        ema_decay=t.ema_decay,
        likelihood_samples=e.likelihood.samples,
        likelihood_steps=e.likelihood.steps,
        fid_samples=e.fid.samples,
        fid_steps=e.fid.steps,
        fid_guidance=e.fid.guidance,
        fid_features=e.fid.features,
        fid_weights=e.fid.weights,
        vae=e.fid.vae,
        num_workers=t.data_workers,
        sweep=sweep,
        trial=trial.id,
        budget=trial.budget,
        **paths,
    )


GRAPHS_BELOW_MFU = 0.20  # compileMode auto: CUDA graphs for rungs this launch-bound


def compile_mode(spec: api.ScalingSweepSpec, trial: Trial) -> str | None:
    """training.compileMode for this rung: `auto` gives CUDA graphs (reduce-overhead) to the
    small rungs, whose steps are bound by kernel launches (under 20% MFU alone on the trainer's
    H100 figures: below about 30M parameters), and torch.compile's default to the others."""
    mode = spec.training.compile_mode
    if mode != "auto":
        return mode
    small = H100_MFU_CURVE.at(trial.params) < GRAPHS_BELOW_MFU
    return "reduce-overhead" if small else None


def auto_micro_batch(spec: api.ScalingSweepSpec, trial: Trial) -> int | None:
    """training.microBatchSize unset: the largest micro-batch the trial's GPU (or its packed
    share of one) holds, by the calibrated memory estimate; None (the rank's whole share) when
    that fits. Before this, a large rung's whole share went to one step and ran out of memory."""
    packing = Packing.of(spec)
    if packing.gpus == 0:  # CPU trials
        return None
    m = packing.micro_batch(trial)
    return None if m >= trial.batch_size // packing.ranks(trial) else m


def node_config(
    spec: api.ScalingSweepSpec, sweep: str, node: Node, stable_root: str | None, **paths: Any
) -> TrainConfig:
    """The trainer's settings for one node of the strategy's graph. A stable segment trains its
    run's shared checkpoint (`stable_root`/<run>) at a constant rate to its end, keeping the
    branch checkpoint there; a branch starts from that checkpoint and cools down to its own
    steps; a plain trial (or a tuning trial) is `train_config`'s. ValueError when a strategy
    node has no stable root (the trials of a cluster sweep without storage.checkpoints share
    no files)."""
    cfg = train_config(spec, sweep, node.trial, **paths)
    if node.kind in ("trial", "tuning"):
        return cfg
    wsd = spec.strategy.wsd_branches
    if stable_root is None or wsd is None:
        raise ValueError("WSD branches need a checkpoint location shared by their trials")
    run = f"{stable_root.rstrip('/')}/{node.run}"
    warmup = cfg.warmup_steps if node.warmup_steps is None else node.warmup_steps
    if node.kind == "stable":
        return replace(
            cfg,
            schedule="constant",
            warmup_steps=warmup,
            checkpoint=run,
            branch_points=(node.trial.steps,),
        )
    return replace(
        cfg,
        schedule="wsd",
        decay_fraction=wsd.cooldown,
        decay_shape=wsd.decay_shape,
        warmup_steps=warmup,
        branch_from=run,
        branch_step=node.branch_step,
    )


def learning_rate(
    spec: api.ScalingSweepSpec,
    rung_name: str,
    rungs: list[Rung] | None = None,
    width: int | None = None,
) -> float:
    """A rung's learning rate: its own, or training.learningRate under the scaling rule.
    `rungs`: the spec's ladder, when the caller has it already; `width`: of a model beyond the
    ladder (a confirmation run)."""
    rungs = ladder(spec) if rungs is None else rungs
    explicit = {c.name: c.learning_rate for c in spec.model.configs}
    if explicit.get(rung_name) is not None:
        return float(explicit[rung_name])  # type: ignore[arg-type]
    t = spec.training
    if t.learning_rate_scaling == "none":
        return t.learning_rate
    if width is None:
        width = next(r.config.width for r in rungs if r.name == rung_name)
    if not width:  # a custom family that does not say its width
        raise ValueError(
            f"training.learningRateScaling {t.learning_rate_scaling} scales by width, and the "
            f"{spec.model.transformer} family does not say its rungs' widths: use none"
        )
    return t.learning_rate * base_width(spec) / width


def fit(
    spec: api.ScalingSweepSpec,
    rows: list[dict[str, float]],
    budgets: tuple[float, ...],
    final: bool = True,
) -> tuple[api.FitResult, Analysis | None]:
    """Fit the laws to the trials of complete budgets; a fit that can't be made is a warning.

    Returns the status document's fit and the Analysis behind it (None when nothing was fitted).
    """
    from threadpoolctl import threadpool_limits

    from isoflop.fit import Points, analyze
    from isoflop.fit.report import to_result

    chosen = [r for r in rows if r["budget"] in budgets]
    method = spec.fit.method if final else "parabola"  # interim refits: the fast method
    warnings: list[str] = []
    if method != "parabola" and len(chosen) < 6:
        method = "parabola"
        warnings.append("the parametric fit needs 6 or more trials; fitted parabolas only")
    hold_out = spec.fit.hold_out_budget
    if hold_out is not None and (hold_out not in budgets or len(budgets) < 3):
        warnings.append(f"hold-out budget {hold_out:g} is not complete yet; no hold-out check")
        hold_out = None
    if method == "parametric":
        hold_out = None  # the hold-out check compares parabolas
    try:
        with threadpool_limits(limits=1):  # many tiny solves: one BLAS thread is fastest
            analysis = analyze(
                Points.from_rows(chosen),
                method=method,
                bootstrap=spec.fit.bootstrap,
                seed=spec.fit.seed,
                predict=spec.fit.predict,
                hold_out=hold_out,
                window=spec.fit.window,
            )
    except ValueError as err:
        return api.FitResult(warnings=[*warnings, f"no laws yet: {err}"]), None
    result = to_result(analysis)
    return result.model_copy(update={"warnings": [*warnings, *result.warnings]}), analysis
