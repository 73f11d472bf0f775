"""Confirmation runs (spec.confirm): train the model the final laws call optimal at a budget above
the grid, with the loss they predict for it written down before it starts, as the paper does at
1.5e21 FLOPs with its 958.3M-parameter model.

    shapes      the models of the family a confirmation chooses from (the ladder's shape rule
                extended, or confirmation.shapes)
    choose      the family's model nearest the predicted N*, sized like a grid trial
    predict     N*, the chosen model and the loss to beat, from the final fit
    trial_of    the Trial a stored confirmation trains (the same after any restart)
    verdict     the measured loss against the prediction, in one sentence

Pure: the drivers store what `predict` returns (the run's state, the resource's status) and launch
`trial_of` it once the engine says so.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from isoflop import api
from isoflop.sweep.plan import (
    H100_MFU_CURVE,
    Infeasible,
    Rung,
    Trial,
    budget_tag,
    rung_config,
    sized,
)

if TYPE_CHECKING:
    from isoflop.fit import Analysis, Points
    from isoflop.fit.confirmation import Drift

PREFIX = "confirm-"
MAX_WIDTH = 16384
MAX_DEPTH = 128


def confirm_id(budget: float) -> str:
    """The trial ID of the confirmation at this budget: confirm-1p5e21."""
    return PREFIX + budget_tag(budget)


def is_confirmation(trial_id: str) -> bool:
    return trial_id.startswith(PREFIX)


def _rung(spec: api.ScalingSweepSpec, depth: int, width: int, heads: int | None = None) -> Rung:
    heads = heads or max(width // spec.model.head_dim, 1)
    return Rung(f"d{depth}w{width}", rung_config(spec, depth, width, heads))


def shapes(spec: api.ScalingSweepSpec) -> list[Rung]:
    """The models a confirmation chooses from, smallest first: confirmation.shapes, or the
    ladder's shape rule extended over every depth (a depth ladder: width = widthPerDepth x
    depth; configs of one depth: every multiple of headDim at that depth; configs of one
    width/depth ratio: that ratio at every depth)."""
    m = spec.model
    if spec.confirmation.shapes:
        out = [_rung(spec, s.depth, s.width, s.heads) for s in spec.confirmation.shapes]
    elif m.depths:
        out = [
            _rung(spec, d, m.width_per_depth * d)
            for d in range(1, MAX_DEPTH + 1)
            if m.width_per_depth * d % m.head_dim == 0 and m.width_per_depth * d <= MAX_WIDTH
        ]
    else:
        d0, w0 = m.configs[0].shape
        if all(c.shape[0] == d0 for c in m.configs):
            out = [
                _rung(spec, d0, w) for w in range(m.head_dim, MAX_WIDTH + 1, m.head_dim) if w >= 8
            ]
        else:  # one width/depth ratio (the spec's rules allow no other configs without shapes)
            out = [
                _rung(spec, d, w0 * d // d0)
                for d in range(1, MAX_DEPTH + 1)
                if w0 * d % d0 == 0
                and (w0 * d // d0) % m.head_dim == 0
                and 8 <= w0 * d // d0 <= MAX_WIDTH
            ]
    return sorted(out, key=lambda r: (r.config.params().total, r.name))


def choose(
    spec: api.ScalingSweepSpec, budget: float, n_star: float
) -> tuple[Trial | Infeasible, str | None]:
    """The family's model nearest N* (in log parameters), sized to spend the budget like a grid
    trial; and a sentence when N* lies beyond the family's models."""
    candidates = shapes(spec)
    if not candidates:
        raise ValueError("the shape rule gives no model to confirm with")
    sizes = [r.config.params().total for r in candidates]
    best = min(range(len(candidates)), key=lambda i: abs(math.log(sizes[i] / n_star)))
    note = None
    if n_star > sizes[-1] * 1.05 or n_star < sizes[0] / 1.05:
        edge = "largest" if n_star > sizes[-1] else "smallest"
        note = (
            f"N* {n_star:.4g} lies beyond the {edge} model of the shape rule "
            f"({sizes[best]:,} parameters); that one is trained"
        )
    got = sized(spec, budget, candidates[best], confirm_id(budget))
    return (got if isinstance(got, Infeasible) else got[0]), note


def trial_of(spec: api.ScalingSweepSpec, c: api.Confirmation) -> Trial:
    """The trial a stored confirmation trains: its model, sized at its budget (deterministic,
    so a driver that restarts trains the same one)."""
    if c.depth is None or c.width is None:
        raise ValueError(f"confirmation {c.trial} has no model: {c.message}")
    got = sized(spec, c.budget, _rung(spec, c.depth, c.width, c.heads), c.trial)
    if isinstance(got, Infeasible):
        raise ValueError(f"confirmation {c.trial}: {got.reason}")
    return got[0]


def resources_spec(spec: api.ScalingSweepSpec) -> api.ScalingSweepSpec:
    """The spec a confirmation trains under: confirmation's resources over the sweep's, never
    packed (a model above the grid's largest fills its GPUs)."""
    c = spec.confirmation
    changes = {
        "gpus_per_node": c.gpus_per_node,
        "nodes": c.nodes,
        "gpu_memory_gib": c.gpu_memory_gib,
        "cpu": c.cpu,
        "memory": c.memory,
    }
    update = {k: v for k, v in changes.items() if v is not None}
    resources = spec.resources.model_copy(update={**update, "packing": None})
    return spec.model_copy(update={"resources": resources})


def n_star(analysis: Analysis, budget: float) -> float:
    """The compute-optimal size the final laws predict: the N* power law through the parabolas'
    optima, as the paper predicts its 958.3M model; the surface's optimum without them."""
    if analysis.laws:
        return float(analysis.laws["params"](budget))
    if analysis.parametric is None:
        raise ValueError("no law of N* to choose a confirmation model with")
    return float(analysis.parametric.optimum(budget)[0])


def unpredicted(budget: float, reason: str) -> api.Confirmation:
    """A confirmation the final laws cannot predict: stored as such (never trained), so the sweep
    ends with the reason rather than waiting for a prediction that cannot come."""
    return api.Confirmation(
        budget=budget,
        trial=confirm_id(budget),
        phase="Infeasible",
        note=reason,
        message=f"not trained: the final laws cannot predict it ({reason})",
    )


def predict(
    spec: api.ScalingSweepSpec,
    analysis: Analysis | None,
    points: Points,
    budgets: Sequence[float],
) -> list[api.Confirmation]:
    """The confirmations at these budgets: N*, the chosen model, the loss to beat with its
    interval, and the metrics their laws against loss predict there. Without a final fit, or
    without the fitted surface, each is stored as not predicted, with why. The grid's check of
    its own extrapolation is made once for them all."""
    from isoflop.fit.confirmation import extrapolation_check

    if analysis is None:
        return [unpredicted(b, "no laws could be fitted to the trials") for b in budgets]
    if analysis.parametric is None:
        why = "no surface L(N, D) was fitted (6 or more trials needed)"
        return [unpredicted(b, why) for b in budgets]
    drift = extrapolation_check(points, analysis.seed) if budgets else None
    return [_predict_one(spec, analysis, points, b, drift) for b in budgets]


def _predict_one(
    spec: api.ScalingSweepSpec,
    analysis: Analysis,
    points: Points,
    budget: float,
    drift: Drift | None,
) -> api.Confirmation:
    from isoflop.fit.confirmation import predict_loss

    target = n_star(analysis, budget)
    chosen, note = choose(spec, budget, target)
    if isinstance(chosen, Infeasible):
        rung = next(r for r in shapes(spec) if r.name == chosen.rung)
        return api.Confirmation(
            budget=budget,
            trial=confirm_id(budget),
            predicted_params=target,
            depth=rung.config.depth,
            width=rung.config.width,
            heads=rung.config.heads,
            params=chosen.params,
            tokens=0,
            steps=max(chosen.steps, 0),
            confidence=analysis.confidence,
            note=chosen.reason,
            phase="Infeasible",
            message=f"not trained: {chosen.reason}",
        )
    p = predict_loss(
        analysis, points, chosen.params, chosen.tokens, budget, spec.fit.seed, drift=drift
    )
    notes = [n for n in (note, p.note) if n]
    if p.predicted.pi is None and p.note:
        notes[-1] = f"{p.note}: no prediction interval"
    metrics = {
        m: float(law(p.predicted.value))
        for m, law in analysis.metric_vs_loss.items()
        if m != "loss_se"
    }
    return api.Confirmation(
        budget=budget,
        trial=chosen.id,
        predicted_params=target,
        depth=chosen.depth,
        width=chosen.width,
        heads=chosen.heads,
        params=chosen.params,
        tokens=chosen.tokens,
        steps=chosen.steps,
        gpu_hours=chosen.gpu_hours(H100_MFU_CURVE),
        predicted_loss=p.predicted.value,
        loss_interval=_interval(p.predicted.pi),
        surface_interval=_interval(p.predicted.ci),
        form_error=None if p.drift is None else p.form_error,
        confidence=analysis.confidence,
        predicted_metrics=metrics,
        note="; ".join(notes) or None,
    )


def _interval(i: object) -> api.Interval | None:
    if i is None:
        return None
    return api.Interval(low=float(i.low), high=float(i.high))  # type: ignore[attr-defined]


def verdict(c: api.Confirmation, loss: float, metrics: dict[str, float]) -> api.Confirmation:
    """The measured loss beside the prediction: how many half-widths apart, inside or not."""
    interval = c.loss_interval
    predicted = c.predicted_loss if c.predicted_loss is not None else math.nan
    measured = f"measured {loss:.4f}, predicted {predicted:.4f}"
    if interval is None:
        return c.model_copy(
            update={
                "phase": "Succeeded",
                "measured_loss": loss,
                "metrics": metrics or None,
                "message": f"{measured} (no interval to judge by: {c.note or 'not identified'})",
            }
        )
    from isoflop.fit.confirmation import half_widths
    from isoflop.fit.stats import Interval, Predicted

    bounds = Interval(interval.low, interval.high)
    halves = half_widths(loss, Predicted(predicted, None, bounds))  # None: no side to count in
    inside = loss in bounds
    apart = "" if halves is None else f" ({halves:+.2f} half-widths)"
    return c.model_copy(
        update={
            "phase": "Succeeded",
            "measured_loss": loss,
            "metrics": metrics or None,
            "half_widths": halves,
            "inside": inside,
            "message": f"{measured} [{interval.low:.4f}, {interval.high:.4f}]: "
            f"{'inside' if inside else 'outside'}{apart}",
        }
    )


def law_optimum(spec: api.ScalingSweepSpec, budget: float, law: Callable[..., Any]) -> float:
    """N* of a known surface L(N, D) at this budget, under the spec's FLOPs accounting (the
    family's FLOPs per parameter and token from its nearest model): what `isoflop plan` shows
    before any trial has run."""
    from scipy.optimize import minimize_scalar

    candidates = shapes(spec)
    if not candidates:
        raise ValueError("the shape rule gives no model to confirm with")

    def flops_per_param_token(rung: Rung) -> float:
        cfg = rung.config
        per_sample = cfg.training_flops_per_sample(spec.flops_accounting)
        return per_sample / (cfg.params().total * cfg.tokens_per_sample)

    sizes = np.log10([r.config.params().total for r in candidates])
    ks = [flops_per_param_token(r) for r in candidates]

    def loss_at(x: float) -> float:
        k = float(np.interp(x, sizes, ks))
        return float(law(10**x, budget / (k * 10**x)))

    lo, hi = float(sizes[0]) - 2, float(sizes[-1]) + 2
    return float(10 ** minimize_scalar(loss_at, bounds=(lo, hi), method="bounded").x)


@dataclass(frozen=True)
class Planned:
    """A confirmation as `isoflop plan` shows it: N* by a known law, the model chosen for it."""

    budget: float
    n_star: float
    trial: Trial | Infeasible
    note: str | None


def plan_confirmations(spec: api.ScalingSweepSpec, law: Callable[..., Any]) -> list[Planned]:
    """spec.confirm's runs as a known law would choose them (the sweep's own final laws choose
    the ones it trains)."""
    out = []
    for budget in sorted(spec.confirm):
        target = law_optimum(spec, budget, law)
        chosen, note = choose(spec, budget, target)
        out.append(Planned(budget, target, chosen, note))
    return out
