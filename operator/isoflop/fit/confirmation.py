"""The prediction a confirmation run must meet: the loss of one model at one budget.

The model the laws call optimal is trained at a budget above the grid, as the paper does at
1.5e21 FLOPs. Its loss is predicted from the fitted surface L(N, D) = E + A/N^alpha + B/D^beta at
the model's own N and D (the chosen model is the family's nearest to N*, not N* itself). The
prediction interval holds three things:

- where the surface lies: the parametric bootstrap's refits, evaluated at (N, D);
- one trial's own scatter around it: the noise model's sigma, widened for its degrees of freedom;
- the surface's form: the grid checks its own extrapolation by fitting without its largest budget
  and predicting that budget's trials. What that error holds beyond the noise of the check (the
  check's own bootstrap measures that) is drift of a surface whose form does not quite hold; it
  is scaled to the confirmation's distance beyond the grid (in decades of compute, linearly) and
  added. A grid with fewer than 3 budgets cannot check itself, and says so.

A measured loss outside the interval is a miss the grid can see; how well the interval covers is
measured in benchmarks/bench_calibration.py (--confirm).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from isoflop.fit.analysis import Analysis
from isoflop.fit.data import Array, Points
from isoflop.fit.noise import estimate_noise
from isoflop.fit.parametric import fit_parametric
from isoflop.fit.stats import Interval, Predicted, percentile_interval

CHECK_RESAMPLES = 100  # bootstrap of the fit without the largest budget: the check's own noise


@dataclass(frozen=True)
class Drift:
    """The grid's check of its own extrapolation: fitted without its largest budget, how far the
    surface misses that budget's trials (mean log error), against the noise of that check."""

    error: float  # mean log(predicted / measured) over the largest budget's trials
    noise: float  # sd of that error from noise alone (resamples + the trials' own scatter)
    decades: float  # how far the check extrapolated: log10(largest / next budget)

    @property
    def excess(self) -> float:
        """The check's error beyond its noise (sd of log loss), 0 when the noise explains it."""
        return math.sqrt(max(self.error**2 - self.noise**2, 0.0))

    def at(self, decades: float) -> float:
        """The form's error at this distance beyond the grid, scaled linearly in decades."""
        return self.excess * decades / self.decades if self.decades > 0 else 0.0

    def blind(self, decades: float) -> float:
        """The smallest drift of the form the check could have seen (2 sd of its noise), scaled
        to this distance beyond the grid: a drift below it is not excluded by the data."""
        return 2 * self.noise * decades / self.decades if self.decades > 0 else math.inf


@dataclass(frozen=True)
class LossPrediction:
    """The loss one trial of (N, D) at `budget` will measure."""

    predicted: Predicted  # value; ci: where the surface lies; pi: where one trial falls
    drift: Drift | None  # None: the grid could not check its extrapolation
    form_error: float  # relative sd added for the surface's form at this distance
    note: str | None  # why an interval or the check is missing


def _mean_log_error(theta: Array, points: Points) -> Array:
    """Mean log(surface / measured) over the points, for parameter rows theta (..., 5)."""
    e, a, b, alpha, beta = (np.asarray(theta)[..., i : i + 1] for i in range(5))
    fitted = e + a / points.params**alpha + b / points.tokens**beta
    out: Array = np.mean(np.log(fitted) - np.log(points.loss), axis=-1)
    return out


def extrapolation_check(points: Points, seed: int = 0) -> Drift | None:
    """Fit the surface without the largest budget, predict that budget's trials: the error, and
    the sd that error has from noise alone. None with fewer than 3 budgets or 6 trials left."""
    budgets = points.budgets
    if len(budgets) < 3:
        return None
    top = points.budget == budgets[-1]
    rest = points.select(~top)
    if len(rest) < 6:
        return None
    noise = estimate_noise(rest)
    try:
        fit = fit_parametric(rest, CHECK_RESAMPLES, seed, noise=noise)
    except ValueError:
        return None
    held = points.select(top)
    theta = np.array([fit.E, fit.A, fit.B, fit.alpha, fit.beta])
    error = float(_mean_log_error(theta, held))
    spread = float(np.std(_mean_log_error(fit.samples, held))) if fit.samples is not None else 0.0
    sigma = estimate_noise(points).relative or noise.relative or 0.0
    check_noise = math.hypot(spread, sigma / math.sqrt(len(held)))
    return Drift(error, check_noise, float(np.log10(budgets[-1] / budgets[-2])))


def predict_loss(
    analysis: Analysis,
    points: Points,
    params: float,
    tokens: float,
    budget: float,
    seed: int = 0,
    *,
    drift: Drift | None,
) -> LossPrediction:
    """The loss one trial of N parameters on D tokens at `budget` will measure. `drift`: the
    grid's `extrapolation_check` (one per fit, whatever the number of budgets predicted).

    ValueError when the analysis has no fitted surface. An interval the sweep cannot identify is
    None, with the sentence that says why in `note`.
    """
    fit = analysis.parametric
    if fit is None:
        raise ValueError(
            "predicting a confirmation needs the fitted surface L(N, D): fit.method parametric "
            "or both, and 6 or more trials"
        )
    value = float(fit.loss(params, tokens))

    def bare(note: str) -> LossPrediction:
        return LossPrediction(Predicted(value), None, 0.0, note)

    if fit.at_bound:
        bound = ", ".join(sorted(fit.at_bound))
        return bare(f"the surface is not identified ({bound} on an optimizer bound)")
    if fit.samples is None or not len(fit.samples):
        return bare("no bootstrap resamples (fit.bootstrap 0)")
    noise = analysis.noise
    if not noise.identified:
        return bare("the noise of one trial is not identified")
    conf = analysis.confidence
    e, a, b, alpha, beta = (fit.samples[:, i] for i in range(5))
    draws = e + a / params**alpha + b / tokens**beta
    ci = percentile_interval(draws, conf)
    if ci is None:
        return bare("too few usable resamples")
    beyond = max(float(np.log10(budget / points.budgets[-1])), 0.0)
    form = drift.at(beyond) if drift is not None else 0.0
    sigma = float(noise.relative or 0.0) * noise.inflation(conf)
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((2, len(draws)))
    measured = draws * np.exp(sigma * z[0] + form * z[1])
    pi = percentile_interval(measured, conf)
    if pi is not None:  # the scatter can only widen where the surface lies
        pi = Interval(min(pi.low, ci.low), max(pi.high, ci.high))
    note = None
    if drift is None:
        note = "fewer than 3 budgets: the grid cannot check its own extrapolation"
    elif pi is not None and drift.blind(beyond) > (pi.high - pi.low) / 2 / value:
        note = (
            f"the grid's check of its own extrapolation is too noisy to see a drift of the "
            f"surface's form under {drift.blind(beyond):.1%} this far beyond the grid, more than "
            "the interval's half-width: the interval assumes the form holds"
        )
    return LossPrediction(Predicted(value, ci, pi), drift, form, note)


def half_widths(measured: float, predicted: Predicted) -> float | None:
    """How far a measurement is from the prediction, in half-widths of the prediction interval
    on the measurement's side (1 is the interval's edge); None without an interval."""
    pi = predicted.pi
    if pi is None:
        return None
    side = (
        (pi.high - predicted.value) if measured >= predicted.value else (predicted.value - pi.low)
    )
    if side <= 0:
        return None
    return (measured - predicted.value) / side
