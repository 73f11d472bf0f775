"""isoFLOP parabolas: loss against log10(N) at one budget, fitted around its minimum."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from isoflop.fit.data import Array
from isoflop.fit.stats import Interval


@dataclass(frozen=True)
class BudgetFit:
    """loss = a*x^2 + b*x + c with x = log10(N), and the compute-optimal point it implies."""

    budget: float
    points: int
    a: float
    b: float
    c: float
    params_opt: float  # N*: the parabola's minimum
    tokens_opt: float  # D* = C / (k * N*), k the FLOPs per parameter-token of the sweep's counting
    loss_opt: float  # L*
    bracketed: bool  # the minimum lies strictly inside the ladder
    advice: str  # empty when bracketed
    params_opt_ci: Interval | None = None
    loss_opt_ci: Interval | None = None
    metrics_opt: tuple[tuple[str, float], ...] = ()  # other metrics at N*
    window: float | None = None  # the local fit's loss rise (see DEFAULT_WINDOW); None: all rungs
    bracketed_fraction: float | None = None  # share of resamples whose minimum stays inside


def weighted_quadratics(u: Array, y: Array, w: Array) -> tuple[Array, np.ndarray]:
    """Weighted least squares y = a u^2 + b u + c for every row of weights w (R, n).

    y is one curve (n,) shared by every row, or one curve per row (R, n). Returns coefficients
    (R, 3) and a mask of the rows that had three distinct points.
    """
    design = np.stack([u * u, u, np.ones_like(u)], axis=1)  # (n, 3)
    normal = np.einsum("rn,ni,nj->rij", w, design, design)  # (R, 3, 3)
    rhs = np.einsum("rn,ni,rn->ri", w, design, np.broadcast_to(y, w.shape))  # (R, 3)
    ok = _three_distinct(u, w)
    normal[~ok] = np.eye(3)
    coef = np.linalg.solve(normal, rhs[..., None])[..., 0]
    return coef, ok


def _three_distinct(u: Array, w: Array) -> np.ndarray:
    """Rows of w (R, n) whose positive weights fall on at least three distinct values of u."""
    if (w > 0).all():  # kernel weights never vanish: the ladder alone decides (the hot path)
        return np.full(len(w), len(np.unique(u)) >= 3)
    values, index = np.unique(u, return_inverse=True)
    per_value = np.zeros((len(w), len(values)))
    np.add.at(per_value.T, index.reshape(-1), (w > 0).T.astype(np.float64))
    return np.asarray((per_value > 0).sum(axis=1) >= 3)


MAX_EXTRAPOLATION = 3.0  # decades beyond the ladder where a reported (unbracketed) minimum stops
# The local fit's Gaussian kernel reaches (at one standard deviation) where the parabola has risen
# this fraction of the minimum loss above it, so steep curves are fitted on a narrow window and
# flat ones on a wide one. Chosen by simulation (benchmarks/bench_calibration.py): a narrower
# window lets noise move the vertex, a wider one the curve's asymmetry and the ladder's ends.
DEFAULT_WINDOW = 0.02
MIN_WIDTH, MAX_WIDTH = 0.1, 2.0  # decades: the kernel never narrower or wider than these
ITERATIONS = 8  # re-centring passes of the kernel; the vertex settles in three or four


def vertex(coef: Array, limit: float = np.inf) -> tuple[Array, Array, np.ndarray]:
    """Minimum (u*, y*) of each parabola row, and whether it has one: convex (a > 0), with
    |u*| <= limit (a nearly straight line has its vertex absurdly far away)."""
    a, b, c = coef[:, 0], coef[:, 1], coef[:, 2]
    safe = np.where(a > 0, a, 1.0)
    u = -b / (2 * safe)
    has_min = (a > 0) & (np.abs(u) <= limit)
    u_opt = np.where(has_min, u, np.nan)
    y_opt = np.where(has_min, c - b * b / (4 * safe), np.nan)
    return u_opt, y_opt, has_min


def vertex_limit(u: Array) -> float:
    """How far from the centre of a ladder (in decades) a reported minimum may lie."""
    return float(np.abs(u).max()) + MAX_EXTRAPOLATION


def kernel_width(u: Array, coef: Array, floor: Array, window: float) -> Array:
    """Each row's kernel width in decades: where its parabola rises `window` x its minimum."""
    a = coef[:, 0]
    _, y_opt, convex = vertex(coef)
    level = np.where(convex, y_opt, floor)
    steps = np.diff(np.unique(u))
    lowest = max(MIN_WIDTH, float(np.median(steps))) if len(steps) else MIN_WIDTH
    with np.errstate(divide="ignore", invalid="ignore"):
        width = np.sqrt(window * np.abs(level) / np.where(convex, a, np.nan))
    return np.asarray(np.clip(np.nan_to_num(width, nan=MAX_WIDTH), lowest, MAX_WIDTH))


def local_parabolas(
    u: Array, y: Array, window: float | None = DEFAULT_WINDOW
) -> tuple[Array, Array, np.ndarray]:
    """The parabola of each row of y (R, n) fitted around that row's own minimum.

    u: centred log10 N of the rungs. Starts from the whole-ladder parabola (or the lowest rung
    where that has no minimum), then re-centres a Gaussian kernel on the vertex a few times, its
    width set by `window` (see DEFAULT_WINDOW; None: every rung weighs the same). Returns
    coefficients (R, 3), the kernel weights (R, n) of the final fit and whether each row's final
    parabola is convex.
    """
    y = np.atleast_2d(y)
    lo, hi = float(u.min()), float(u.max())
    weights = np.ones_like(y)
    coef, _ = weighted_quadratics(u, y, weights)
    if window is not None:
        lowest = u[np.argmin(y, axis=1)]
        floor = y.min(axis=1)
        for _ in range(ITERATIONS):
            u_opt, _, convex = vertex(coef)
            centre = np.clip(np.where(convex, u_opt, lowest), lo, hi)
            width = kernel_width(u, coef, floor, window)
            weights = np.exp(-0.5 * ((u[None, :] - centre[:, None]) / width[:, None]) ** 2)
            coef, _ = weighted_quadratics(u, y, weights)
    return coef, weights, np.asarray(coef[:, 0] > 0)


def fit_budget(
    budget: float,
    params: Array,
    tokens: Array,
    loss: Array,
    metrics: dict[str, Array] | None = None,
    window: float | None = DEFAULT_WINDOW,
) -> BudgetFit:
    """Fit one budget's isoFLOP parabola around its minimum; needs at least three model sizes."""
    sizes = len(np.unique(params))
    if sizes < 3:
        raise ValueError(
            f"budget {budget:g} has {sizes} model size(s); a parabola needs at least 3"
        )
    x = np.log10(params)
    center = float(x.mean())
    coef, weights, _ = local_parabolas(x - center, loss[None, :], window)
    u_opt, l_opt, convex = vertex(coef, vertex_limit(x - center))
    a, b, c = (float(v) for v in coef[0])
    # back to uncentred coefficients of x
    a_x, b_x, c_x = a, b - 2 * a * center, a * center * center - b * center + c
    lo, hi = float(x.min()), float(x.max())
    if not convex[0]:
        x_opt = float("nan")
        bracketed = False
        advice = "loss does not curve upward across the ladder: widen it on both sides"
        if coef[0, 0] > 0:
            advice = "loss barely curves across the ladder: widen it towards lower loss"
    else:
        x_opt = float(u_opt[0]) + center
        bracketed = lo < x_opt < hi
        advice = ""
        if x_opt <= lo:
            advice = "the minimum lies below the smallest model: add smaller rungs"
        elif x_opt >= hi:
            advice = "the minimum lies above the largest model: add larger rungs"
    n_opt = 10**x_opt
    d_opt = budget / float(flops_per_param_token(budget, params, tokens, x_opt) * n_opt)
    metrics_opt = tuple(
        (name, float(10 ** metric_at(x - center, np.log10(values), u_opt, weights)[0]))
        for name, values in sorted((metrics or {}).items())
    )
    return BudgetFit(
        budget=budget,
        points=len(params),
        a=a_x,
        b=b_x,
        c=c_x,
        params_opt=n_opt,
        tokens_opt=d_opt,
        loss_opt=float(l_opt[0]) if convex[0] else float("nan"),
        bracketed=bracketed,
        advice=advice,
        metrics_opt=metrics_opt,
        window=window,
    )


def flops_per_param_token(budget: float, params: Array, tokens: Array, x: float | Array) -> Array:
    """k(N) = C / (N D) at log10(N) = x, interpolated over the budget's trials.

    Exactly 6 under the paper's counting; under exact counting it drifts slowly with model size.
    """
    log_k = np.log10(budget / (params * tokens))
    slope, intercept = (
        np.polyfit(np.log10(params), log_k, 1) if np.ptp(log_k) > 0 else (0.0, log_k[0])
    )
    return np.asarray(10 ** (intercept + slope * np.asarray(x)), dtype=np.float64)


def metric_at(u: Array, log_metric: Array, u_opt: Array, w: Array | None = None) -> Array:
    """A metric's quadratic in u, evaluated at each row's loss-optimal u* (log10 of the metric)."""
    weights = np.ones((len(u_opt), len(u))) if w is None else w
    coef, _ = weighted_quadratics(u, log_metric, weights)
    return np.asarray(coef[:, 0] * u_opt**2 + coef[:, 1] * u_opt + coef[:, 2], dtype=np.float64)
