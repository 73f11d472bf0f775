"""The noise model behind every interval: how much one trial's loss scatters around its truth.

Losses are modelled with multiplicative noise, log L = log L_true + sigma * z, so sigma is the
relative standard deviation of one trial's loss. It comes, in order of preference, from:

- `given`: the caller's value (`isoflop fit --noise`, or a forecast's simulated noise);
- `replicates`: the pooled spread of rows that repeat a (budget, model size): seeds
  (`spec.training.replicates`), the only source that sees training's own seed-to-seed noise;
- `residuals`: the pooled residuals of a smooth curve through each budget (a polynomial in
  log N of degree 2 to 4, by the number of model sizes);
- `measured`: each trial's standard error (a `loss_se` column: the evaluator's sampling error
  over its validation samples). It is a floor, not the whole noise: it is used where it exceeds
  the residuals' estimate, or where nothing else is known.

With no degree of freedom left (three model sizes per budget, no replicates, nothing measured)
the noise is not identified, and nothing downstream reports an interval as a number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats

from isoflop.fit.data import Array, Points

Source = Literal["given", "measured", "replicates", "residuals", "none"]


@dataclass(frozen=True)
class Noise:
    """Relative noise of one trial's loss (sd of log loss), with its degrees of freedom."""

    relative: float | None  # None: not identified
    dof: float  # math.inf for given or measured noise
    source: Source
    per_trial: Array | None = None  # measured: each trial's own relative standard error

    @property
    def identified(self) -> bool:
        return self.relative is not None

    def inflation(self, confidence: float) -> float:
        """t over z: how much wider an interval must be when sigma is itself estimated."""
        if not math.isfinite(self.dof):
            return 1.0
        tail = 1.0 - (1.0 - confidence) / 2.0
        return float(stats.t.ppf(tail, self.dof) / stats.norm.ppf(tail))

    def sigma(self, points: Points) -> Array:
        """Each trial's relative noise."""
        if self.relative is None:
            raise ValueError("the noise is not identified")
        if self.per_trial is not None:
            return self.per_trial
        return np.full(len(points), self.relative)


def smooth_degree(sizes: int) -> int:
    """Degree of the smooth curve through one budget's losses: 2 to 4 by distinct model sizes."""
    if sizes <= 5:
        return 2
    if sizes <= 8:
        return 3
    return 4


def smooth_curve(x: Array, log_loss: Array) -> tuple[Array, int]:
    """The smooth curve's values at x (log10 N) and its residual degrees of freedom."""
    sizes = len(np.unique(x))
    deg = min(smooth_degree(sizes), sizes - 1)
    centre, scale = float(x.mean()), float(np.ptp(x)) or 1.0
    coef = np.polyfit((x - centre) / scale, log_loss, deg)
    fitted = np.polyval(coef, (x - centre) / scale)
    return np.asarray(fitted, dtype=np.float64), max(len(x) - deg - 1, 0)


def estimate_noise(points: Points, given: float | None = None) -> Noise:
    """The noise model for these points (see the module docstring for the order of sources)."""
    if given is not None:
        if not math.isfinite(given) or given < 0:
            raise ValueError(f"the noise must be a non-negative relative value, got {given}")
        return Noise(given, math.inf, "given")
    measured = None
    if points.loss_se is not None:
        rel = points.loss_se / points.loss
        measured = Noise(float(np.sqrt(np.mean(rel**2))), math.inf, "measured", rel)
    log_loss = np.log(points.loss)
    # replicates: rows that repeat (budget, params)
    keys = np.stack([points.budget, points.params], axis=1)
    _, group, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    group = group.reshape(-1)
    if (counts > 1).any():
        means = np.bincount(group, log_loss) / counts
        ss = float(((log_loss - means[group]) ** 2).sum())
        dof = float((counts - 1).sum())
        return Noise(math.sqrt(ss / dof), dof, "replicates")
    ss, dof = 0.0, 0
    for c in points.budgets:
        sel = points.budget == c
        if len(np.unique(points.params[sel])) < 3:
            continue
        x = np.log10(points.params[sel])
        fitted, k = smooth_curve(x, log_loss[sel])
        ss += float(((log_loss[sel] - fitted) ** 2).sum())
        dof += k
    residual = math.sqrt(ss / dof) if dof else None
    if measured is not None and (residual is None or (measured.relative or 0.0) >= residual):
        return measured
    if residual is None:
        return Noise(None, 0.0, "none")
    return Noise(residual, float(dof), "residuals")


def describe(noise: Noise) -> str:
    """One phrase for reports: '0.480% of the loss (residuals, 52 degrees of freedom)'."""
    if noise.relative is None:
        return "not identified"
    dof = "" if not math.isfinite(noise.dof) else f", {noise.dof:.0f} degrees of freedom"
    return f"{noise.relative:.3%} of the loss ({noise.source}{dof})"
