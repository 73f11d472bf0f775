"""A whole sweep's analysis: isoFLOP parabolas, power laws, parametric fit, predictions, checks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from isoflop.fit.data import Array, Points
from isoflop.fit.noise import Noise, estimate_noise, smooth_curve
from isoflop.fit.parabola import (
    DEFAULT_WINDOW,
    BudgetFit,
    fit_budget,
    flops_per_param_token,
    local_parabolas,
    metric_at,
    vertex,
)
from isoflop.fit.parametric import ParametricFit, fit_parametric
from isoflop.fit.powerlaw import (
    MIN_PREDICTION_POINTS,
    PowerLaw,
    SaturatingLaw,
    fit_power_law,
    fit_saturating_law,
    masked_lines,
)
from isoflop.fit.stats import (
    MIN_RESAMPLES,
    Interval,
    Predicted,
    censored_interval,
    identified_share,
    percentile_interval,
)

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
    """Fit without one budget, predict it, compare with that budget's own parabola.

    The prediction intervals come from the same resamples as the fit: each resample's law
    fitted without the budget against that resample's own optimum of the budget, so they hold
    the noise of both sides and nothing else.
    """

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
    def params_within(self) -> bool | None:
        """The observed N* lies in its prediction interval (None: no interval to compare)."""
        p = self.predicted.params
        return None if p is None or p.pi is None else self.observed_params in p.pi

    @property
    def loss_within(self) -> bool | None:
        """The observed L* lies in its prediction interval. A loss with a floor flattens faster
        than a pure power law, so L* fails this check on such data where N* passes it."""
        p = self.predicted.loss
        return None if p is None or p.pi is None else self.observed_loss in p.pi

    @property
    def within_prediction_interval(self) -> bool | None:
        """Both N* and L*; None when the intervals are not identified."""
        both = (self.params_within, self.loss_within)
        return None if None in both else all(both)


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
    noise: Noise = field(default_factory=lambda: Noise(None, 0.0, "none"))
    window: float | None = DEFAULT_WINDOW
    not_identified: tuple[str, ...] = ()  # quantities whose interval the design cannot give
    disagreement: str | None = None  # the two methods' N* exponents disagree beyond intervals

    @property
    def methods_agree(self) -> bool | None:
        """Whether the two methods' N* exponent intervals overlap; None without both."""
        if not self.laws or self.parametric is None:
            return None
        both = (self.laws["params"].exponent_ci, self.parametric.intervals.get("params_exponent"))
        return None if None in both else self.disagreement is None


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
    window: float | None = DEFAULT_WINDOW,
    noise: float | None = None,
    bin_decades: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> Analysis:
    """Fit a sweep. Raises ValueError naming the problems for input no law can be fitted to.

    Intervals come from a parametric bootstrap: each resample redraws every trial's loss around
    a smooth curve through its budget with the noise model's scatter (`isoflop.fit.noise`).
    `noise` fixes the relative noise instead of estimating it; `bin_decades` groups measured
    budgets into bins of that width in log10 C (default: budgets within 0.1% are one).
    `progress` is told of each parametric resample fitted (the slow part; a progress bar).
    """
    _check_arguments(method, bootstrap, confidence, window, predict)
    points = points.grouped(bin_decades)
    budgets = points.budgets
    if len(budgets) < 2:
        raise ValueError(f"scaling laws need at least 2 budgets, got 1 ({budgets[0]:g})")
    if hold_out is not None and hold_out != "largest" and float(hold_out) not in budgets:
        raise ValueError(f"hold-out budget {float(hold_out):g} is not one of the budgets")
    rng = np.random.default_rng(seed)
    noise_model = estimate_noise(points, noise)
    result = Analysis(
        method=method,
        bootstrap=bootstrap,
        seed=seed,
        confidence=confidence,
        noise=noise_model,
        window=window,
    )
    warnings: list[str] = []
    missing: list[str] = []
    points, dropped = points.positive_metrics()
    for name in dropped:
        warnings.append(
            f"{name} has values <= 0 (bits/dim of continuous latents can be), so no power law "
            f"fits it: no {name} law"
        )
    if bootstrap and not noise_model.identified:
        warnings.append(
            "intervals are not identified: with 3 model sizes per budget, no replicates and no "
            "measured standard errors nothing measures the noise of a loss; add rungs or "
            "replicates, or give the noise (isoflop fit --noise)"
        )
        missing.append("all intervals")
    boot: _Boot | None = None
    if method in ("parabola", "both"):
        result, boot = _parabola_method(points, result, rng, irreducible, warnings, missing)
    if method in ("parametric", "both"):
        parametric = fit_parametric(points, bootstrap, seed, confidence, noise_model, progress)
        result = replace(result, parametric=parametric)
        _parametric_warnings(parametric, warnings, missing)
    disagreement = _disagreement(result)
    if disagreement:
        warnings.append(disagreement)
    predictions = tuple(_predict(result, float(c), rng) for c in predict)
    if predictions and result.laws and result.laws["params"].points < MIN_PREDICTION_POINTS:
        warnings.append(
            "predictions come from laws through 2 budgets: no prediction interval (a line "
            "through 2 points says nothing of the scatter around it)"
        )
    holdout = None
    if hold_out is not None:
        if boot is None:
            warnings.append("the hold-out check compares parabolas; this fit has none")
        else:
            holdout = _hold_out(result, boot, hold_out, warnings)
    return replace(
        result,
        predictions=predictions,
        holdout=holdout,
        warnings=tuple(warnings),
        not_identified=tuple(missing),
        disagreement=disagreement,
    )


def _check_arguments(
    method: str,
    bootstrap: int,
    confidence: float,
    window: float | None,
    predict: tuple[float, ...] | list[float],
) -> None:
    if method not in ("parabola", "parametric", "both"):
        raise ValueError(f"method must be parabola, parametric or both, got {method!r}")
    if bootstrap < 0:
        raise ValueError(f"bootstrap must be 0 or more, got {bootstrap}")
    if 0 < bootstrap < MIN_RESAMPLES:
        raise ValueError(
            f"{bootstrap} resamples are too few for an interval's tails; use at least "
            f"{MIN_RESAMPLES}, or 0 for no intervals"
        )
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if window is not None and not (np.isfinite(window) and 0 < window <= 1):
        raise ValueError(f"the fit window must be a relative loss rise in (0, 1], got {window}")
    if any(not np.isfinite(c) or c <= 0 for c in predict):
        raise ValueError("budgets to predict must be positive FLOP counts")


def _parametric_warnings(
    parametric: ParametricFit, warnings: list[str], missing: list[str]
) -> None:
    """What the parametric fit cannot identify: parameters on their bounds, intervals."""
    for name, bound in parametric.at_bound.items():
        warnings.append(
            f"parametric fit: {name} ends on its optimizer bound ({bound}): it is not "
            "identified by these trials"
        )
        missing.append(f"parametric {name}")
    missing += [f"parametric {n} interval" for n in parametric.unidentified]


@dataclass(frozen=True)
class _Boot:
    """Per (resample, budget) optima of the parabola method; NaN where a resample has none."""

    budgets: Array  # (J,)
    usable: np.ndarray  # (J,) the point estimate is bracketed
    log_params: Array  # (R, J) log10 N*
    loss: Array  # (R, J)


@dataclass
class _Draws:
    """The bootstrap's optima, one column per budget: log10 N*, L*, D* and each metric there."""

    x: Array  # (R, J)
    loss: Array
    tokens: Array
    metrics: dict[str, Array]

    @classmethod
    def empty(cls, reps: int, budgets: int, metrics: list[str]) -> _Draws:
        def nan() -> Array:
            return np.full((reps, budgets), np.nan)

        return cls(nan(), nan(), nan(), {m: nan() for m in metrics})

    def columns(self, keep: np.ndarray) -> _Draws:
        metrics = {m: v[:, keep] for m, v in self.metrics.items()}
        return _Draws(self.x[:, keep], self.loss[:, keep], self.tokens[:, keep], metrics)


def _parabola_method(
    points: Points,
    result: Analysis,
    rng: np.random.Generator,
    irreducible: bool,
    warnings: list[str],
    missing: list[str],
) -> tuple[Analysis, _Boot]:
    """A parabola per budget (resampled for intervals), then power laws through the optima."""
    budgets = points.budgets
    reps = result.bootstrap if result.noise.identified else 0
    sigma = result.noise.sigma(points) * result.noise.inflation(result.confidence) if reps else None
    draws = _Draws.empty(reps, len(budgets), sorted(points.metrics))
    fits: list[BudgetFit] = []
    problems: list[str] = []
    kept = np.zeros(len(budgets), dtype=bool)
    for j, budget in enumerate(budgets):
        mask = points.budget == budget
        sel = points.select(mask)
        sizes = len(np.unique(sel.params))
        if sizes < 3:
            problems.append(f"{budget:g} ({sizes})")
            continue
        kept[j] = True
        fit = fit_budget(
            float(budget), sel.params, sel.tokens, sel.loss, sel.metrics, result.window
        )
        if sigma is not None:
            fit = _resample_budget(fit, sel, sigma[mask], rng, reps, result, draws, j)
            if fit.bracketed and fit.params_opt_ci is None:
                left = 1 - (fit.bracketed_fraction or 0.0)
                warnings.append(
                    f"budget {budget:g}: its minimum leaves the ladder in {left:.0%} of "
                    "resamples, so its N* interval is not identified: add rungs around the minimum"
                )
                missing.append(f"budget {budget:g} N* interval")
        if not fit.bracketed:
            warnings.append(f"budget {budget:g}: {fit.advice}; left out of the laws")
        fits.append(fit)
    _two_budgets_or_refuse(fits, problems, warnings)
    draws = draws.columns(kept)
    usable = np.array([f.bracketed for f in fits], dtype=bool)
    analysis = _laws(points, result, fits, budgets[kept][usable], usable, draws, reps > 0,
                     irreducible, rng, warnings, missing)  # fmt: skip
    return analysis, _Boot(budgets[kept], usable, draws.x, draws.loss)


def _resample_budget(
    fit: BudgetFit,
    sel: Points,
    sigma: Array,
    rng: np.random.Generator,
    reps: int,
    result: Analysis,
    draws: _Draws,
    j: int,
) -> BudgetFit:
    """One budget's parametric bootstrap: redraw its losses around the smoothed curve, refit the
    parabolas, keep each resample's optimum (NaN where it leaves the ladder) in column j."""
    conf = result.confidence
    x = np.log10(sel.params)
    center = float(x.mean())
    u = x - center
    smooth, _ = smooth_curve(x, np.log(sel.loss))
    redrawn = np.exp(smooth + sigma * rng.standard_normal((reps, len(x))))
    coef, weights, convex = local_parabolas(u, redrawn, result.window)
    u_opt, l_opt, _ = vertex(coef)
    below = convex & (u_opt <= u.min())
    above = convex & (u_opt >= u.max())
    inside = convex & ~below & ~above
    draws.x[:, j] = np.where(inside, u_opt + center, np.nan)
    draws.loss[:, j] = np.where(inside, l_opt, np.nan)
    k = flops_per_param_token(fit.budget, sel.params, sel.tokens, draws.x[:, j])
    draws.tokens[:, j] = fit.budget / (k * 10 ** draws.x[:, j])
    for m, column in draws.metrics.items():
        log_m = metric_at(u, np.log10(sel.metrics[m]), np.nan_to_num(u_opt), weights)
        column[:, j] = np.where(inside, 10**log_m, np.nan)
    log_ci = censored_interval(draws.x[:, j], below, above, conf)
    fraction = float(inside.mean())
    return replace(
        fit,
        params_opt_ci=None if log_ci is None else Interval(10**log_ci.low, 10**log_ci.high),
        loss_opt_ci=percentile_interval(draws.loss[:, j], conf)
        if fraction >= identified_share(conf)
        else None,
        bracketed_fraction=fraction,
    )


def _two_budgets_or_refuse(fits: list[BudgetFit], problems: list[str], warnings: list[str]) -> None:
    if problems:
        plural = "s" if len(problems) > 1 else ""
        warnings.append(
            f"fewer than the 3 model sizes a parabola needs at budget{plural} "
            f"{', '.join(problems)}; left out"
        )
    usable = sum(f.bracketed for f in fits)
    if usable < 2:
        detail = [f"{f.budget:g}: {f.advice}" for f in fits if not f.bracketed]
        if problems:
            detail.append(f"fewer than the 3 model sizes a parabola needs at {', '.join(problems)}")
        raise ValueError(
            "scaling laws need at least 2 budgets with a minimum inside the ladder, got "
            f"{usable}" + (f": {'; '.join(detail)}" if detail else "")
        )


def _laws(
    points: Points,
    result: Analysis,
    fits: list[BudgetFit],
    c: Array,
    usable: np.ndarray,
    draws: _Draws,
    boot: bool,
    irreducible: bool,
    rng: np.random.Generator,
    warnings: list[str],
    missing: list[str],
) -> Analysis:
    """Power laws of N*, D*, L* (and each metric) through the usable budgets' optima."""
    conf = result.confidence

    def law(name: str, values: Array, samples: Array) -> PowerLaw:
        boot_y = samples[:, usable] if boot else None
        fitted = fit_power_law(name, c, values, boot_y, confidence=conf)
        if boot and not fitted.identified:
            missing.append(f"{name} law intervals")
        return fitted

    def optima(values: list[float]) -> Array:
        out: Array = np.asarray(values, dtype=float)[usable]
        return out

    laws = {
        "params": law("params", optima([f.params_opt for f in fits]), 10**draws.x),
        "tokens": law("tokens", optima([f.tokens_opt for f in fits]), draws.tokens),
        "loss": law("loss", optima([f.loss_opt for f in fits]), draws.loss),
    }
    if boot and not laws["params"].identified:
        warnings.append(
            "the N* law's intervals are not identified: too many resamples lose the minimum of "
            "a budget; add rungs around each budget's minimum"
        )
    metric_laws = {
        m: law(m, optima([dict(f.metrics_opt)[m] for f in fits]), samples)
        for m, samples in draws.metrics.items()
    }
    metric_vs_loss = {m: _metric_vs_loss(points, m, rng, result) for m in sorted(points.metrics)}
    saturating = None
    if irreducible:
        samples = draws.loss[:, usable] if boot else None
        saturating = fit_saturating_law(
            "loss", c, optima([f.loss_opt for f in fits]), samples, conf
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


def _disagreement(result: Analysis) -> str | None:
    """A sentence when the parabola and parametric N* exponents' intervals do not overlap."""
    if not result.laws or result.parametric is None:
        return None
    law, par = result.laws["params"], result.parametric
    a, b = law.exponent_ci, par.intervals.get("params_exponent")
    if a is None or b is None or (a.low <= b.high and b.low <= a.high):
        return None
    return (
        f"the methods disagree: the parabolas give N* ~ C^{law.exponent:.4f} "
        f"[{a.low:.4f}, {a.high:.4f}], the parametric fit C^{par.params_exponent:.4f} "
        f"[{b.low:.4f}, {b.high:.4f}]; the loss surface is not what one of them assumes "
        "(check the isoFLOP curves and whether each budget's minimum is well inside its ladder)"
    )


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


def _hold_out(
    result: Analysis, boot: _Boot, hold_out: float | str, warnings: list[str]
) -> HoldOut | None:
    budgets = boot.budgets
    target = float(budgets[-1]) if hold_out == "largest" else float(hold_out)
    if target not in budgets:
        warnings.append(f"no hold-out check: budget {target:g} has too few model sizes")
        return None
    j = int(np.flatnonzero(budgets == target)[0])
    rest = boot.usable.copy()
    rest[j] = False
    if not boot.usable[j] or rest.sum() < 2:
        why = "its minimum is not inside the ladder" if not boot.usable[j] else "too few budgets"
        warnings.append(f"no hold-out check of {target:g}: {why}")
        return None
    fits = result.budget_fits  # one per budget of boot.budgets, in order
    c = budgets[rest]
    log_c, log_target = np.log10(c), np.log10(target)
    observed = fits[j]
    estimates: dict[str, Predicted] = {}
    for name, values, samples in (
        ("params", np.log10([f.params_opt for f in fits]), boot.log_params),
        ("loss", np.log10([f.loss_opt for f in fits]), np.log10(boot.loss)),
    ):
        slope, intercept = np.polyfit(log_c, values[rest], 1)
        value = intercept + slope * log_target
        pi = None
        if len(samples):
            mask = np.isfinite(samples[:, rest])
            b_int, b_slope, ok = masked_lines(log_c, samples[:, rest], mask)
            err = samples[:, j] - (b_int + b_slope * log_target)  # observed - predicted
            err = err[ok & np.isfinite(err)]
            if len(err) >= identified_share(result.confidence) * len(samples):
                tail = (1.0 - result.confidence) / 2.0
                lo, hi = np.quantile(err - err.mean(), [tail, 1.0 - tail])
                pi = Interval(10 ** (value + lo), 10 ** (value + hi))
        estimates[name] = Predicted(float(10**value), None, pi)
    predicted = Prediction(budget=target, params=estimates["params"], loss=estimates["loss"])
    return HoldOut(target, predicted, observed.params_opt, observed.loss_opt)


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
    more_data: Literal["first", "second", "neither"]  # whose D* grows measurably faster


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
    more: Literal["first", "second", "neither"] = "neither"  # not a measurable difference
    if tokens.significant and tokens.difference > 0:
        more = "first"
    elif tokens.significant and tokens.difference < 0:
        more = "second"
    return Comparison(tuple(diffs), more)
