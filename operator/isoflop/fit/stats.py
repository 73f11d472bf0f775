"""Bootstrap intervals, and predictions that keep confidence and prediction intervals apart."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from isoflop.fit.data import Array

MIN_SAMPLES = 20  # fewer valid bootstrap samples than this give no interval


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    def __contains__(self, value: float) -> bool:
        return self.low <= value <= self.high

    @property
    def width(self) -> float:
        return self.high - self.low


def percentile_interval(samples: Array, confidence: float) -> Interval | None:
    """The central `confidence` interval of the finite samples, or None with too few."""
    finite = samples[np.isfinite(samples)]
    if finite.size < MIN_SAMPLES:
        return None
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(finite, [tail, 1.0 - tail])
    return Interval(float(low), float(high))


@dataclass(frozen=True)
class Predicted:
    """A predicted value with a confidence interval (where the fitted law lies) and a prediction
    interval (where a new measurement would fall: the law's uncertainty plus the scatter of points
    around it). The prediction interval is never narrower than the confidence interval."""

    value: float
    ci: Interval | None = None
    pi: Interval | None = None
