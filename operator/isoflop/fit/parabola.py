"""isoFLOP parabolas: loss against log10(N) at one budget, its minimum, and bootstrap resamples."""

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


def weighted_quadratics(u: Array, y: Array, w: Array) -> tuple[Array, np.ndarray]:
    """Weighted least squares y = a u^2 + b u + c for every row of weights w (R, n).

    Returns coefficients (R, 3) and a mask of the rows that had three distinct points.
    """
    design = np.stack([u * u, u, np.ones_like(u)], axis=1)  # (n, 3)
    normal = np.einsum("rn,ni,nj->rij", w, design, design)  # (R, 3, 3)
    rhs = np.einsum("rn,ni,n->ri", w, design, y)  # (R, 3)
    ok = (w > 0).sum(axis=1) >= 3
    normal[~ok] = np.eye(3)
    coef = np.linalg.solve(normal, rhs[..., None])[..., 0]
    return coef, ok


MAX_EXTRAPOLATION = 3.0  # decades beyond the ladder where a parabola's minimum still counts


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
    """How far from the centre of a ladder (in decades) a minimum may lie and still count."""
    return float(np.abs(u).max()) + MAX_EXTRAPOLATION


def fit_budget(
    budget: float,
    params: Array,
    tokens: Array,
    loss: Array,
    metrics: dict[str, Array] | None = None,
) -> BudgetFit:
    """Fit one budget's isoFLOP parabola; needs at least three model sizes."""
    if len(params) < 3:
        raise ValueError(
            f"budget {budget:g} has {len(params)} trial(s); a parabola needs at least 3 model sizes"
        )
    x = np.log10(params)
    center = float(x.mean())
    coef, _ = weighted_quadratics(x - center, loss, np.ones((1, len(x))))
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
        (name, float(10 ** metric_at(x - center, np.log10(values), u_opt)[0]))
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
