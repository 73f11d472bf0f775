"""Chinchilla "Approach 3": L(N, D) = E + A / N^alpha + B / D^beta over all trials at once.

Fitted as in Hoffmann et al. (2022) and Epoch AI's replication (Besiroglu et al., 2024): a Huber
loss (delta 1e-3) on log L, with log L(N, D) = LSE(a - alpha ln N, b - beta ln D, e), A = e^a,
B = e^b, E = e^e; L-BFGS-B started from the best points of a grid. Intervals come from a
parametric bootstrap: every trial's loss redrawn around the fitted surface with the noise model's
scatter (or the fit's own, if larger), refitted from the estimate. A parameter that ends on an
optimizer bound is not identified by the trials and is flagged, not reported as a number.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

from isoflop.fit.data import Array, Points
from isoflop.fit.noise import Noise
from isoflop.fit.stats import Interval, percentile_interval

HUBER_DELTA = 1e-3
# Epoch's grid, with finer exponents: diffusion losses scale with exponents of 0.1-0.4, and from
# the old steps of 0.5 every start could sit on a plateau where one term vanishes and L-BFGS-B
# stops at once (simulated DiT sweeps: N* exponent 0.43 against a true 0.57).
EXPONENTS = np.array([0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0])
GRID = {
    "a": np.arange(0.0, 30.0, 5.0),
    "b": np.arange(0.0, 30.0, 5.0),
    "e": np.arange(-1.0, 1.5, 0.5),
    "alpha": EXPONENTS,
    "beta": EXPONENTS,
}
BOUNDS = [(-20.0, 60.0), (-20.0, 60.0), (-10.0, 10.0), (1e-3, 4.0), (1e-3, 4.0)]
STARTS = 8  # L-BFGS-B runs from the best grid points
FTOL, GTOL = 1e-10, 1e-8


@dataclass(frozen=True)
class ParametricFit:
    """L(N, D) = E + A / N^alpha + B / D^beta and the compute-optimal allocation it implies."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    flops_per_param_token: float  # k in C = k N D (6 under the paper's counting)
    objective: float
    points: int
    intervals: dict[str, Interval | None] = field(default_factory=dict)
    samples: Array | None = field(default=None, repr=False, compare=False)  # (R, 5) bootstrap
    at_bound: dict[str, str] = field(default_factory=dict)  # parameter -> "upper 4" etc.
    unidentified: tuple[str, ...] = ()  # intervals that reach a bound in too many resamples
    residual: float = 0.0  # relative rms residual of the fit (sd of log L)

    @property
    def params_exponent(self) -> float:
        """a in N*(C) ~ C^a: beta / (alpha + beta)."""
        return self.beta / (self.alpha + self.beta)

    @property
    def tokens_exponent(self) -> float:
        """b in D*(C) ~ C^b: alpha / (alpha + beta)."""
        return self.alpha / (self.alpha + self.beta)

    def loss(self, params: float | Array, tokens: float | Array) -> Array:
        n, d = np.asarray(params, dtype=np.float64), np.asarray(tokens, dtype=np.float64)
        return np.asarray(self.E + self.A / n**self.alpha + self.B / d**self.beta, dtype=np.float64)

    def optimum(self, compute: float | Array) -> tuple[Array, Array, Array]:
        """Compute-optimal (N*, D*, L*) at budget C under C = k N D."""
        return optimum(
            np.array([self.E, self.A, self.B, self.alpha, self.beta]),
            compute,
            self.flops_per_param_token,
        )


def optimum(theta: Array, compute: float | Array, k: float) -> tuple[Array, Array, Array]:
    """(N*, D*, L*) for parameter rows theta (..., 5) = (E, A, B, alpha, beta)."""
    e, a, b, alpha, beta = (theta[..., i] for i in range(5))
    c = np.asarray(compute, dtype=np.float64) / k
    g = (alpha * a / (beta * b)) ** (1.0 / (alpha + beta))
    n = g * c ** (beta / (alpha + beta))
    d = c / n
    return n, d, e + a / n**alpha + b / d**beta


def _objective(
    theta: Array, ln_n: Array, ln_d: Array, ln_l: Array, w: Array, scale: float = 1.0
) -> tuple[float, Array]:
    """Weighted mean Huber loss of log L (times scale), and its gradient in a, b, e, alpha, beta."""
    a, b, e, alpha, beta = theta
    terms = np.stack([a - alpha * ln_n, b - beta * ln_d, np.full_like(ln_n, e)])  # (3, n)
    top = terms.max(axis=0)
    ex = np.exp(terms - top)
    total = ex.sum(axis=0)
    r = top + np.log(total) - ln_l
    share = ex / total  # d LSE / d term
    absr = np.abs(r)
    huber = np.where(absr <= HUBER_DELTA, 0.5 * r * r, HUBER_DELTA * (absr - 0.5 * HUBER_DELTA))
    wn = w / w.sum()
    g = wn * np.clip(r, -HUBER_DELTA, HUBER_DELTA)
    grad = np.array(
        [
            (g * share[0]).sum(),
            (g * share[1]).sum(),
            (g * share[2]).sum(),
            -(g * share[0] * ln_n).sum(),
            -(g * share[1] * ln_d).sum(),
        ]
    )
    return float((wn * huber).sum()) * scale, grad * scale


def _grid_objective(ln_n: Array, ln_d: Array, ln_l: Array) -> tuple[Array, Array]:
    grid = np.array(list(itertools.product(*GRID.values())))  # (G, 5): a, b, e, alpha, beta
    a, b, e, alpha, beta = (grid[:, i : i + 1] for i in range(5))
    terms = np.stack(
        [a - alpha * ln_n, b - beta * ln_d, np.broadcast_to(e, (len(grid), len(ln_n)))]
    )
    r = np.logaddexp(np.logaddexp(terms[0], terms[1]), terms[2]) - ln_l
    absr = np.abs(r)
    huber = np.where(absr <= HUBER_DELTA, 0.5 * r * r, HUBER_DELTA * (absr - 0.5 * HUBER_DELTA))
    return grid, huber.mean(axis=1)


def _minimize(start: Array, ln_n: Array, ln_d: Array, ln_l: Array, w: Array) -> tuple[Array, float]:
    # L-BFGS-B's ftol is relative to max(|f|, 1) and this objective is ~1e-5: scale it to ~1 at
    # the start so the tolerance is truly relative (else fits stop at a warm start).
    scale = 1.0 / max(_objective(start, ln_n, ln_d, ln_l, w)[0], 1e-300)
    res = minimize(
        _objective,
        start,
        args=(ln_n, ln_d, ln_l, w, scale),
        jac=True,
        method="L-BFGS-B",
        bounds=BOUNDS,
        options={"maxiter": 2000, "ftol": FTOL, "gtol": GTOL},
    )
    return np.asarray(res.x, dtype=np.float64), float(res.fun) / scale


def _to_natural(theta: Array) -> Array:
    """(a, b, e, alpha, beta) -> (E, A, B, alpha, beta)."""
    a, b, e, alpha, beta = (theta[..., i] for i in range(5))
    return np.stack([np.exp(e), np.exp(a), np.exp(b), alpha, beta], axis=-1)


def _bounds_hit(theta: Array) -> Array:
    """(..., 5) bool: which of (a, b, e, alpha, beta) sit on an optimizer bound."""
    lo = np.array([b[0] for b in BOUNDS])
    hi = np.array([b[1] for b in BOUNDS])
    tol = 1e-6 * (hi - lo)
    return np.asarray((theta <= lo + tol) | (theta >= hi - tol))


NATURAL = ("A", "B", "E", "alpha", "beta")  # the order of BOUNDS, in the reported names


def fit_parametric(
    points: Points,
    bootstrap: int = 0,
    seed: int = 0,
    confidence: float = 0.95,
    noise: Noise | None = None,
    progress: Callable[[int], None] | None = None,
) -> ParametricFit:
    """Fit L(N, D) to every trial; `bootstrap` parametric resamples give the intervals."""
    if len(points) < 6:
        raise ValueError(f"the parametric fit needs at least 6 trials, got {len(points)}")
    if len(np.unique(points.params)) < 3 or len(np.unique(points.tokens)) < 3:
        raise ValueError("the parametric fit needs at least 3 distinct model sizes and data sizes")
    ln_n, ln_d, ln_l = np.log(points.params), np.log(points.tokens), np.log(points.loss)
    ones = np.ones(len(points))
    grid, values = _grid_objective(ln_n, ln_d, ln_l)
    best, best_value = grid[0], np.inf
    for start in grid[np.argsort(values)[:STARTS]]:
        theta, value = _minimize(start, ln_n, ln_d, ln_l, ones)
        if value < best_value:
            best, best_value = theta, value
    natural = _to_natural(best)
    k = float(np.median(points.budget / (points.params * points.tokens)))
    e_, a_, b_, alpha_, beta_ = natural
    fitted = np.log(e_ + a_ / points.params**alpha_ + b_ / points.tokens**beta_)
    dof = len(points) - 5
    residual = float(np.sqrt(((ln_l - fitted) ** 2).sum() / dof)) if dof > 0 else 0.0
    hit = _bounds_hit(best)
    at_bound = {
        NATURAL[i]: f"{'lower' if best[i] <= BOUNDS[i][0] + 1e-6 else 'upper'} bound of "
        f"{'log ' if i < 3 else ''}{NATURAL[i]}"
        for i in np.flatnonzero(hit)
    }
    intervals: dict[str, Interval | None] = {}
    unidentified: list[str] = []
    samples = None
    sigma = max(residual, noise.relative or 0.0) if noise is not None else residual
    if noise is not None and noise.identified:
        sigma *= noise.inflation(confidence)
    if bootstrap > 0 and sigma > 0:
        rng = np.random.default_rng(seed)
        resampled = []
        with threadpool_limits(limits=1):
            for _ in range(bootstrap):
                drawn = fitted + sigma * rng.standard_normal(len(ln_l))
                resampled.append(_minimize(best, ln_n, ln_d, drawn, ones)[0])
                if progress is not None:
                    progress(1)
        rows = np.array(resampled)
        samples = _to_natural(rows)
        intervals, unidentified = _intervals(samples, _bounds_hit(rows), at_bound, confidence)
    return ParametricFit(
        E=float(natural[0]),
        A=float(natural[1]),
        B=float(natural[2]),
        alpha=float(natural[3]),
        beta=float(natural[4]),
        flops_per_param_token=k,
        objective=best_value,
        points=len(points),
        intervals=intervals,
        samples=samples,
        at_bound=at_bound,
        unidentified=tuple(unidentified),
        residual=residual,
    )


def _intervals(
    samples: Array, hits: np.ndarray, at_bound: dict[str, str], confidence: float
) -> tuple[dict[str, Interval | None], list[str]]:
    """Percentile intervals of the parameters and the implied exponents; None (and named as
    unidentified) where more resamples than a tail end on an optimizer bound."""
    intervals: dict[str, Interval | None] = {}
    unidentified: list[str] = []
    share = hits.mean(axis=0)  # per (a, b, e, alpha, beta)
    tail = (1.0 - confidence) / 2.0
    share_of = dict(zip(NATURAL, share, strict=True))  # BOUNDS order, by name
    for i, n in enumerate(("E", "A", "B", "alpha", "beta")):  # the order of samples
        if share_of[n] > tail or n in at_bound:
            intervals[n] = None
            unidentified.append(n)
        else:
            intervals[n] = percentile_interval(samples[:, i], confidence)
    alpha, beta = samples[:, 3], samples[:, 4]
    exps_ok = max(share[3], share[4]) <= tail and not ({"alpha", "beta"} & set(at_bound))
    for name, values in (
        ("params_exponent", beta / (alpha + beta)),
        ("tokens_exponent", alpha / (alpha + beta)),
    ):
        intervals[name] = percentile_interval(values, confidence) if exps_ok else None
        if not exps_ok:
            unidentified.append(name)
    return intervals, unidentified
