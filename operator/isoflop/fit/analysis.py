"""A whole sweep's analysis: isoFLOP parabolas, power laws, parametric fit, predictions, checks."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from isoflop.fit.data import Array, Points
from isoflop.fit.parabola import (
    BudgetFit,
    fit_budget,
    flops_per_param_token,
    metric_at,
    vertex,
    vertex_limit,
    weighted_quadratics,
)
from isoflop.fit.parametric import ParametricFit, fit_parametric
from isoflop.fit.powerlaw import PowerLaw, SaturatingLaw, fit_power_law, fit_saturating_law
from isoflop.fit.stats import Interval, Predicted, percentile_interval

Method = Literal["parabola", "parametric", "both"]
LAWS = ("params", "tokens", "loss")


@dataclass(frozen=True)
class Prediction:
    """What the fitted laws say about one budget."""

    budget: float
    params: Predicted | None = None
    tokens: Predicted | None = None
    loss: Predicted | None = None
    metrics: dict[str, Predicted] = field(default_factory=dict)
    parametric_params: float | None = None
    parametric_tokens: float | None = None
    parametric_loss: float | None = None


@dataclass(frozen=True)
class HoldOut:
    """Fit without one budget, predict it, compare with that budget's own parabola."""

    budget: float
    predicted: Prediction
    observed_params: float
    observed_loss: float

    @property
    def params_error(self) -> float:
        """Relative error of the predicted N*."""
        assert self.predicted.params is not None
        return self.predicted.params.value / self.observed_params - 1.0

    @property
    def loss_error(self) -> float:
        assert self.predicted.loss is not None
        return self.predicted.loss.value / self.observed_loss - 1.0

    @property
    def within_prediction_interval(self) -> bool:
        p, lo = self.predicted.params, self.predicted.loss
        return bool(
            p is not None
            and p.pi is not None
            and self.observed_params in p.pi
            and lo is not None
            and lo.pi is not None
            and self.observed_loss in lo.pi
        )


@dataclass(frozen=True)
class Analysis:
    """Everything fitted from one sweep's trial results."""

    method: Method
    bootstrap: int
    seed: int
    confidence: float
    budget_fits: tuple[BudgetFit, ...] = ()
    laws: dict[str, PowerLaw] = field(default_factory=dict)  # params, tokens, loss
    metric_laws: dict[str, PowerLaw] = field(default_factory=dict)  # metric at N* against C
    metric_vs_loss: dict[str, PowerLaw] = field(default_factory=dict)  # metric against loss
    loss_saturating: SaturatingLaw | None = None
    parametric: ParametricFit | None = None
    predictions: tuple[Prediction, ...] = ()
    holdout: HoldOut | None = None
    warnings: tuple[str, ...] = ()


def analyze(
    points: Points,
    *,
    method: Method = "both",
    bootstrap: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    predict: tuple[float, ...] | list[float] = (),
    hold_out: float | Literal["largest"] | None = None,
    irreducible: bool = False,
) -> Analysis:
    """Fit a sweep. Raises ValueError naming the problem for input no law can be fitted to."""
    if method not in ("parabola", "parametric", "both"):
        raise ValueError(f"method must be parabola, parametric or both, got {method!r}")
    if bootstrap < 0:
        raise ValueError(f"bootstrap must be 0 or more, got {bootstrap}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if any(not np.isfinite(c) or c <= 0 for c in predict):
        raise ValueError("budgets to predict must be positive FLOP counts")
    budgets = points.budgets
    if len(budgets) < 2:
        raise ValueError(f"scaling laws need at least 2 budgets, got 1 ({budgets[0]:g})")
    rng = np.random.default_rng(seed)
    result = Analysis(method=method, bootstrap=bootstrap, seed=seed, confidence=confidence)
    warnings: list[str] = []

    if method in ("parabola", "both"):
        result = _parabola_method(points, result, rng, irreducible, warnings)
    if method in ("parametric", "both"):
        result = replace(result, parametric=fit_parametric(points, bootstrap, seed, confidence))
    predictions = tuple(_predict(result, float(c), rng) for c in predict)
    holdout = None
    if hold_out is not None:
        holdout = _hold_out(points, result, hold_out)
    return replace(result, predictions=predictions, holdout=holdout, warnings=tuple(warnings))


def _parabola_method(
    points: Points,
    result: Analysis,
    rng: np.random.Generator,
    irreducible: bool,
    warnings: list[str],
) -> Analysis:
    budgets = points.budgets
    reps = result.bootstrap
    metric_names = sorted(points.metrics)
    fits: list[BudgetFit] = []
    # bootstrap optima per (resample, budget)
    x_boot = np.full((reps, len(budgets)), np.nan)
    l_boot = np.full((reps, len(budgets)), np.nan)
    d_boot = np.full((reps, len(budgets)), np.nan)
    m_boot = {m: np.full((reps, len(budgets)), np.nan) for m in metric_names}
    for j, budget in enumerate(budgets):
        sel = points.select(points.budget == budget)
        fit = fit_budget(float(budget), sel.params, sel.tokens, sel.loss, sel.metrics)
        if reps:
            x = np.log10(sel.params)
            center = float(x.mean())
            n = len(x)
            w = rng.multinomial(n, np.full(n, 1.0 / n), size=reps).astype(np.float64)
            coef, ok = weighted_quadratics(x - center, sel.loss, w)
            u_opt, l_opt, convex = vertex(coef, vertex_limit(x - center))
            valid = ok & convex
            x_boot[:, j] = np.where(valid, u_opt + center, np.nan)
            l_boot[:, j] = np.where(valid, l_opt, np.nan)
            k = flops_per_param_token(float(budget), sel.params, sel.tokens, x_boot[:, j])
            d_boot[:, j] = budget / (k * 10 ** x_boot[:, j])
            for m in metric_names:
                log_m = metric_at(x - center, np.log10(sel.metrics[m]), np.nan_to_num(u_opt), w)
                m_boot[m][:, j] = np.where(valid, 10**log_m, np.nan)
            fit = replace(
                fit,
                params_opt_ci=percentile_interval(10 ** x_boot[:, j], result.confidence),
                loss_opt_ci=percentile_interval(l_boot[:, j], result.confidence),
            )
        if not fit.bracketed:
            warnings.append(f"budget {budget:g}: {fit.advice}")
        fits.append(fit)

    usable = np.array([np.isfinite(f.loss_opt) for f in fits])
    if usable.sum() < 2:
        raise ValueError(
            "scaling laws need at least 2 budgets whose loss curves upward across the ladder, "
            f"got {int(usable.sum())}"
        )
    c = budgets[usable]
    boot = reps > 0

    def law(name: str, values: Array, samples: Array) -> PowerLaw:
        boot_y = samples[:, usable] if boot else None
        return fit_power_law(name, c, values, boot_y, confidence=result.confidence)

    laws = {
        "params": law("params", np.array([f.params_opt for f in fits])[usable], 10**x_boot),
        "tokens": law("tokens", np.array([f.tokens_opt for f in fits])[usable], d_boot),
        "loss": law("loss", np.array([f.loss_opt for f in fits])[usable], l_boot),
    }
    metric_laws = {
        m: law(m, np.array([dict(f.metrics_opt)[m] for f in fits])[usable], m_boot[m])
        for m in metric_names
    }
    metric_vs_loss = {m: _metric_vs_loss(points, m, rng, result) for m in metric_names}
    saturating = None
    if irreducible:
        loss_opt = np.array([f.loss_opt for f in fits])[usable]
        saturating = fit_saturating_law(
            "loss", c, loss_opt, l_boot[:, usable] if boot else None, result.confidence
        )
    return replace(
        result,
        budget_fits=tuple(fits),
        laws=laws,
        metric_laws=metric_laws,
        metric_vs_loss=metric_vs_loss,
        loss_saturating=saturating,
    )


def _metric_vs_loss(
    points: Points, metric: str, rng: np.random.Generator, result: Analysis
) -> PowerLaw:
    """metric = a * loss^b over every trial, as the paper relates FID to loss."""
    y = points.metrics[metric]
    boot_x = boot_y = None
    if result.bootstrap:
        idx = rng.integers(0, len(y), size=(result.bootstrap, len(y)))
        boot_x, boot_y = points.loss[idx], y[idx]
    return fit_power_law(f"{metric}~loss", points.loss, y, boot_y, boot_x, result.confidence)


def _predict(result: Analysis, budget: float, rng: np.random.Generator) -> Prediction:
    conf = result.confidence
    pred = Prediction(budget=budget)
    if result.laws:
        pred = replace(
            pred,
            params=result.laws["params"].predict(budget, conf, rng),
            tokens=result.laws["tokens"].predict(budget, conf, rng),
            loss=result.laws["loss"].predict(budget, conf, rng),
            metrics={m: law.predict(budget, conf, rng) for m, law in result.metric_laws.items()},
        )
    if result.parametric is not None:
        n, d, loss = result.parametric.optimum(budget)
        pred = replace(
            pred,
            parametric_params=float(n),
            parametric_tokens=float(d),
            parametric_loss=float(loss),
        )
    return pred


def _hold_out(points: Points, result: Analysis, hold_out: float | str) -> HoldOut:
    budgets = points.budgets
    target = float(budgets[-1]) if hold_out == "largest" else float(hold_out)
    if target not in budgets:
        raise ValueError(f"hold-out budget {target:g} is not one of the budgets")
    if len(budgets) < 3:
        raise ValueError("a hold-out check needs at least 3 budgets (2 to fit, 1 to predict)")
    rest = points.select(points.budget != target)
    fitted = analyze(
        rest,
        method="parabola",
        bootstrap=result.bootstrap,
        seed=result.seed,
        confidence=result.confidence,
        predict=[target],
    )
    own = points.select(points.budget == target)
    observed = fit_budget(target, own.params, own.tokens, own.loss)
    return HoldOut(target, fitted.predictions[0], observed.params_opt, observed.loss_opt)


# ------------------------------------------------------------------------------------------------
# comparison of two sweeps


@dataclass(frozen=True)
class ExponentDifference:
    law: str
    first: float
    second: float
    ci: Interval | None  # of first - second

    @property
    def difference(self) -> float:
        return self.first - self.second

    @property
    def significant(self) -> bool:
        return self.ci is not None and not (self.ci.low <= 0.0 <= self.ci.high)


@dataclass(frozen=True)
class Comparison:
    differences: tuple[ExponentDifference, ...]
    more_data: Literal["first", "second", "neither"]  # whose D* grows faster with compute


def compare(first: Analysis, second: Analysis, confidence: float = 0.95) -> Comparison:
    """Exponent differences of two sweeps (e.g. in-context vs cross-attention) with intervals."""
    if not first.laws or not second.laws:
        raise ValueError("comparing sweeps needs the parabola method's laws on both")
    rng = np.random.default_rng(first.seed)
    diffs = []
    for name in LAWS:
        a, b = first.laws[name], second.laws[name]
        ci = None
        if a.samples is not None and b.samples is not None:
            sa, sb = a.samples[1], b.samples[1]
            n = min(len(sa), len(sb))
            if n:
                ci = percentile_interval(
                    rng.permutation(sa)[:n] - rng.permutation(sb)[:n], confidence
                )
        diffs.append(ExponentDifference(name, a.exponent, b.exponent, ci))
    tokens = diffs[1]
    more: Literal["first", "second", "neither"] = "neither"
    if tokens.difference > 0:
        more = "first"
    elif tokens.difference < 0:
        more = "second"
    return Comparison(tuple(diffs), more)
