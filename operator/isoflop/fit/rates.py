"""Learning-rate and batch-size laws: the optimum of one rung's loss against log learning rate
(or log batch size), and the law of those optima across sizes and data, eta*(N, D) = coefficient x
N^alpha x D^beta and B*(D) = coefficient x D^beta (Step Law's forms, Li et al. 2025), or the forms
a narrower stage identifies (DeepSeek LLM's eta*(C) for one size).

Pure numpy. Fits validate their input and raise ValueError naming the problem; the bootstrap
takes an explicit seed, and an exponent the points cannot pin down has no interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from isoflop.fit.stats import Interval, percentile_interval

RateForm = Literal["params-tokens", "compute", "params", "tokens", "constant"]
FORM_WORDS: dict[RateForm, str] = {
    "params-tokens": "eta* = a N^alpha D^beta",
    "compute": "eta* = a C^gamma (one model size: DeepSeek's compute-only form)",
    "params": "eta* = a N^alpha (one budget: D's exponent is not identified)",
    "tokens": "B* = a D^beta (Step Law's batch form)",
    "constant": "eta* = a (one rung at one budget: no scaling is identified)",
}
BATCH_CONSTANT_WORDS = "B* = a (one number of tokens: no scaling is identified)"


def rate_optimum(rates: Sequence[float], losses: Sequence[float]) -> float:
    """The minimum of the parabola in log10(rate) through three points whose middle one has the
    lowest loss: the optimum between its neighbours. ValueError otherwise. The same for three
    batch sizes."""
    if len(rates) != 3 or len(losses) != 3:
        raise ValueError("rate_optimum takes three rates and their losses")
    x = np.log10(np.asarray(rates, dtype=np.float64))
    y = np.asarray(losses, dtype=np.float64)
    if not (x[0] < x[1] < x[2]):
        raise ValueError("the rates must ascend")
    if not (np.isfinite(y).all() and y[1] <= y[0] and y[1] <= y[2]):
        raise ValueError("the middle rate must have the lowest loss")
    a, b, _ = np.polyfit(x, y, 2)
    if a <= 1e-12 * float(np.abs(y).max()):  # equal losses: a flat basin, its middle the guess
        return float(rates[1])
    return float(10 ** min(max(-b / (2 * a), x[0]), x[2]))


@dataclass(frozen=True)
class RatePoint:
    """One rung's optimum (a learning rate, or a batch size) at one budget."""

    budget: float
    params: float
    tokens: float
    optimum: float


@dataclass(frozen=True)
class RateLaw:
    """log10 eta* = log10 coefficient + alpha log10 N + beta log10 D (or + gamma log10 C), or
    log10 B* = log10 coefficient + beta log10 D; the exponents the form has not are None, as are
    intervals the resamples cannot identify."""

    form: RateForm
    coefficient: float
    points: int
    params_exponent: float | None = None
    tokens_exponent: float | None = None
    compute_exponent: float | None = None
    residual_std: float = 0.0  # of log10 eta* around the law; 0 with no degrees of freedom
    intervals: dict[str, Interval | None] = field(default_factory=dict)

    def __call__(self, params: float, tokens: float, compute: float) -> float:
        log = math.log10(self.coefficient)
        log += (self.params_exponent or 0.0) * math.log10(params)
        log += (self.tokens_exponent or 0.0) * math.log10(tokens)
        log += (self.compute_exponent or 0.0) * math.log10(compute)
        return float(10**log)

    batch: bool = False  # a batch-size law

    @property
    def words(self) -> str:
        if self.batch and self.form == "constant":
            return BATCH_CONSTANT_WORDS
        return FORM_WORDS[self.form]


def rate_form(points: Sequence[RatePoint]) -> RateForm:
    """The richest form these points identify."""
    sizes = {p.params for p in points}
    budgets = {p.budget for p in points}
    if len(sizes) > 1 and len(budgets) > 1 and np.linalg.matrix_rank(_design(points)) == 3:
        return "params-tokens"
    if len(sizes) == 1 and len(budgets) > 1:
        return "compute"
    if len(sizes) > 1:
        return "params"
    return "constant"


def _design(points: Sequence[RatePoint], form: RateForm = "params-tokens") -> np.ndarray:
    ones = np.ones(len(points))
    logs = {
        "params": np.log10([p.params for p in points]),
        "tokens": np.log10([p.tokens for p in points]),
        "compute": np.log10([p.budget for p in points]),
    }
    columns = {
        "params-tokens": [ones, logs["params"], logs["tokens"]],
        "compute": [ones, logs["compute"]],
        "params": [ones, logs["params"]],
        "tokens": [ones, logs["tokens"]],
        "constant": [ones],
    }[form]
    return np.stack(columns, axis=1)


EXPONENTS: dict[RateForm, tuple[str, ...]] = {
    "params-tokens": ("params", "tokens"),
    "compute": ("compute",),
    "params": ("params",),
    "tokens": ("tokens",),
    "constant": (),
}


def _solve(design: np.ndarray, y: np.ndarray) -> np.ndarray | None:
    if np.linalg.matrix_rank(design) < design.shape[1]:
        return None
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    return np.asarray(coef)


def fit_rate_law(
    points: Sequence[RatePoint], bootstrap: int = 1000, seed: int = 0, confidence: float = 0.95
) -> RateLaw:
    """The learning-rate law of these optima in the richest form they identify, with percentile
    intervals of its coefficient and exponents from `bootstrap` residual resamples (the design
    fixed, the residuals drawn again). A law with no degrees of freedom left has no intervals."""
    _check(points, "a learning-rate law")
    return _fit(points, rate_form(points), bootstrap, seed, confidence)


def fit_batch_law(
    points: Sequence[RatePoint], bootstrap: int = 1000, seed: int = 0, confidence: float = 0.95
) -> RateLaw:
    """The batch-size law of these optima: B* = a D^beta (Step Law's form: the optimum batch
    grows with the data, not the model), or a constant where every point has the same D."""
    _check(points, "a batch-size law")
    form: RateForm = "tokens" if len({p.tokens for p in points}) > 1 else "constant"
    return replace(_fit(points, form, bootstrap, seed, confidence), batch=True)


def _check(points: Sequence[RatePoint], what: str) -> None:
    if not points:
        raise ValueError(f"{what} needs at least one optimum")
    if any(not (p.optimum > 0 and p.params > 0 and p.tokens > 0 and p.budget > 0) for p in points):
        raise ValueError("optima, sizes, tokens and budgets must be positive")


def _fit(
    points: Sequence[RatePoint], form: RateForm, bootstrap: int, seed: int, confidence: float
) -> RateLaw:
    design = _design(points, form)
    y = np.log10([p.optimum for p in points])
    coef = _solve(design, y)
    assert coef is not None  # the form was chosen for its rank
    dof = len(points) - design.shape[1]
    residual = y - design @ coef
    std = float(np.sqrt(residual @ residual / dof)) if dof > 0 else 0.0
    names = EXPONENTS[form]
    intervals: dict[str, Interval | None] = dict.fromkeys(("coefficient", *names), None)
    if bootstrap and dof > 0:  # residual bootstrap: the design stays the stage's own
        rng = np.random.default_rng(seed)
        scaled = residual * math.sqrt(len(points) / dof)  # residuals shrink by the fit's dof
        draws = design @ coef + rng.choice(scaled, size=(bootstrap, len(points)))
        samples = np.linalg.lstsq(design, draws.T, rcond=None)[0].T  # (R, columns)
        cis = [percentile_interval(samples[:, k], confidence) for k in range(len(coef))]
        first = cis[0]
        intervals["coefficient"] = (
            Interval(10**first.low, 10**first.high) if first is not None else None
        )
        intervals |= dict(zip(names, cis[1:], strict=True))
    exponents = dict(zip(names, (float(c) for c in coef[1:]), strict=True))
    return RateLaw(
        form=form,
        coefficient=float(10 ** coef[0]),
        points=len(points),
        params_exponent=exponents.get("params"),
        tokens_exponent=exponents.get("tokens"),
        compute_exponent=exponents.get("compute"),
        residual_std=std,
        intervals=intervals,
    )
