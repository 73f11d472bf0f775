"""Power laws y = a * C^b fitted in log space, optionally y = E + A * C^-gamma, with bootstrap."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import least_squares

from isoflop.fit.data import Array
from isoflop.fit.stats import Interval, Predicted, identified_share, percentile_interval

MIN_PREDICTION_POINTS = 3  # a law through 2 points has no residual: no prediction interval


def masked_lines(u: Array, v: Array, mask: np.ndarray) -> tuple[Array, Array, np.ndarray]:
    """Least-squares v = intercept + slope * u for every row, using only the masked points.

    u: (J,) or (R, J); v and mask: (R, J). Rows with fewer than two distinct points are not ok.
    """
    m = mask.astype(np.float64)
    u = np.broadcast_to(u, v.shape)
    v = np.where(mask, v, 0.0)
    n = m.sum(axis=1)
    safe_n = np.maximum(n, 1.0)
    u_mean = (m * u).sum(axis=1) / safe_n
    v_mean = (m * v).sum(axis=1) / safe_n
    du = (u - u_mean[:, None]) * m
    sxx = (du * du).sum(axis=1)
    ok = (n >= 2) & (sxx > 0)
    slope = np.where(ok, (du * (v - v_mean[:, None])).sum(axis=1) / np.where(ok, sxx, 1.0), np.nan)
    intercept = np.where(ok, v_mean - slope * u_mean, np.nan)
    return intercept, slope, ok


@dataclass(frozen=True)
class PowerLaw:
    """y = coefficient * C^exponent, fitted as log10 y = log10 coefficient + exponent * log10 C."""

    name: str
    coefficient: float
    exponent: float
    points: int
    residual_std: float  # of log10 y around the fit; 0 when the fit has no degrees of freedom
    coefficient_ci: Interval | None = None
    exponent_ci: Interval | None = None
    point_std: float = 0.0  # the noise of one point's log10 y, from the resamples
    identified: bool = True  # False: too many resamples gave no law for an interval to mean much
    # bootstrap samples of (log10 coefficient, exponent), for predictions and comparisons
    samples: tuple[Array, Array] | None = field(default=None, repr=False, compare=False)

    def __call__(self, compute: float | Array) -> Array:
        return np.asarray(self.coefficient * np.asarray(compute) ** self.exponent, dtype=np.float64)

    def predict(self, compute: float, confidence: float, rng: np.random.Generator) -> Predicted:
        """The law at `compute`, with a confidence interval and, from 3 or more points, a
        prediction interval (where that budget's own measured optimum would fall)."""
        value = float(self(compute))
        if self.samples is None or not self.identified:
            return Predicted(value)
        log_coef, exponent = self.samples
        log_pred = log_coef + exponent * np.log10(compute)
        ci = percentile_interval(10**log_pred, confidence)
        if self.points < MIN_PREDICTION_POINTS:
            return Predicted(value, ci)
        # one new point scatters by the noise of a measured optimum, or by the law's own
        # residuals where those are larger (a law that does not quite hold)
        scatter = max(self.point_std, self.residual_std if self.points > 3 else 0.0)
        noisy = log_pred + rng.normal(0.0, scatter, size=log_pred.shape)
        pi = percentile_interval(10**noisy, confidence)
        if ci is not None and pi is not None:  # the scatter can only widen the interval
            pi = Interval(min(pi.low, ci.low), max(pi.high, ci.high))
        return Predicted(value, ci, pi)


def fit_power_law(
    name: str,
    x: Array,
    y: Array,
    boot_y: Array | None = None,
    boot_x: Array | None = None,
    confidence: float = 0.95,
) -> PowerLaw:
    """Fit y = a * x^b to points (x_j, y_j), x usually the budget C.

    Bootstrap rows boot_y (R, J) give the intervals; non-finite entries are left out of their row.
    boot_x (R, J) is for resamples whose x varies too; by default every row uses x.
    """
    if len(x) < 2:
        raise ValueError(f"a power law for {name} needs at least 2 points, got {len(x)}")
    if np.any(x <= 0) or np.any(~np.isfinite(y)) or np.any(y <= 0):
        raise ValueError(f"a power law for {name} needs positive, finite values")
    u, v = np.log10(x), np.log10(y)
    intercept, slope, ok = masked_lines(u, v[None, :], np.ones((1, len(u)), dtype=bool))
    if not ok[0]:
        raise ValueError(f"a power law for {name} needs at least 2 distinct budgets")
    residuals = v - (intercept[0] + slope[0] * u)
    dof = len(u) - 2
    residual_std = float(np.sqrt((residuals**2).sum() / dof)) if dof > 0 else 0.0
    coef_ci = exp_ci = None
    samples = None
    point_std = 0.0
    identified = True
    if boot_y is not None:
        mask = np.isfinite(boot_y) & (boot_y > 0)
        log_boot = np.log10(np.where(mask, boot_y, 1.0))
        b_u = u if boot_x is None else np.log10(boot_x)
        b_int, b_slope, b_ok = masked_lines(b_u, log_boot, mask)
        samples = (b_int[b_ok], b_slope[b_ok])
        identified = bool(b_ok.mean() >= identified_share(confidence)) if len(b_ok) else False
        if identified:
            coef_ci = percentile_interval(10 ** samples[0], confidence)
            exp_ci = percentile_interval(samples[1], confidence)
        if boot_x is None:
            spread = [
                np.std(log_boot[mask[:, j], j]) for j in range(len(u)) if mask[:, j].sum() > 1
            ]
            point_std = float(np.median(spread)) if spread else 0.0
    return PowerLaw(
        name=name,
        coefficient=float(10 ** intercept[0]),
        exponent=float(slope[0]),
        points=len(u),
        residual_std=residual_std,
        coefficient_ci=coef_ci,
        exponent_ci=exp_ci,
        point_std=point_std,
        identified=identified,
        samples=samples,
    )


@dataclass(frozen=True)
class SaturatingLaw:
    """y = irreducible + coefficient * C^-decay: a loss that flattens towards E."""

    name: str
    irreducible: float
    coefficient: float
    decay: float
    irreducible_ci: Interval | None = None
    coefficient_ci: Interval | None = None
    decay_ci: Interval | None = None

    def __call__(self, compute: float | Array) -> Array:
        c = np.asarray(compute, dtype=np.float64)
        return np.asarray(
            self.irreducible + self.coefficient * c ** (-self.decay), dtype=np.float64
        )


def _saturating(u: Array, log_y: Array, start: Array) -> Array:
    """Least squares on log y of log(E + exp(logA - gamma * ln C)); params (E, logA, gamma)."""
    ln_c = u * np.log(10.0)

    def residual(theta: Array) -> Array:
        e, log_a, gamma = theta
        return np.asarray(np.log(e + np.exp(log_a - gamma * ln_c)) - log_y, dtype=np.float64)

    upper = float(np.exp(log_y.min()))  # E can't exceed the smallest loss
    x0 = np.clip(start, [0.0, -50.0, 1e-6], [upper * (1 - 1e-9), 200.0, 5.0])
    fit = least_squares(residual, x0, bounds=([0.0, -50.0, 1e-6], [upper, 200.0, 5.0]))
    return np.asarray(fit.x, dtype=np.float64)


def fit_saturating_law(
    name: str,
    compute: Array,
    y: Array,
    boot_y: Array | None = None,
    confidence: float = 0.95,
) -> SaturatingLaw:
    """Fit y = E + A * C^-gamma in log space (three parameters need at least 4 budgets)."""
    if len(compute) < 4:
        raise ValueError(
            f"{name} with an irreducible term needs at least 4 budgets, got {len(compute)}"
        )
    u, log_y = np.log10(compute), np.log(y)
    pure = np.polyfit(u * np.log(10.0), log_y, 1)  # ln y = ln a + b ln C: start with E = 0
    start = np.array([0.5 * float(y.min()), pure[1], max(-pure[0], 1e-3)])
    theta = _saturating(u, log_y, start)
    cis: list[Interval | None] = [None, None, None]
    if boot_y is not None:
        rows = [r for r in boot_y if np.all(np.isfinite(r) & (r > 0))]
        boots = np.array([_saturating(u, np.log(r), theta) for r in rows]).reshape(-1, 3)
        boots[:, 1] = np.exp(boots[:, 1])
        cis = [percentile_interval(boots[:, i], confidence) for i in range(3)]
    return SaturatingLaw(name, float(theta[0]), float(np.exp(theta[1])), float(theta[2]), *cis)
