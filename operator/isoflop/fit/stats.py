"""Bootstrap intervals, and predictions that keep confidence and prediction intervals apart."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from isoflop.fit.data import Array

MIN_SAMPLES = 20  # fewer valid bootstrap samples than this give no interval
MIN_RESAMPLES = 100  # fewer resamples than this are refused: their tails are a handful of draws


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


def censored_interval(
    samples: Array, below: np.ndarray, above: np.ndarray, confidence: float
) -> Interval | None:
    """The central interval of samples of which some are only known to lie below or above
    (NaN entries, e.g. a resample with no minimum at all, count as both).

    None when a tail of the interval falls among the censored samples: the quantity is not
    identified by the design, and no number should be reported for it.
    """
    if samples.size < MIN_SAMPLES:
        return None
    unknown = ~np.isfinite(samples) & ~below & ~above
    low_side = np.where(below | unknown, -np.inf, samples)
    high_side = np.where(above | unknown, np.inf, samples)
    tail = (1.0 - confidence) / 2.0
    # order statistics by hand: np.quantile interpolates between infinities into NaN
    low_sorted = np.sort(np.where(above, np.inf, low_side))
    high_sorted = np.sort(np.where(below, -np.inf, high_side))
    k = samples.size - 1
    low = float(low_sorted[int(np.floor(tail * k))])
    high = float(high_sorted[int(np.ceil((1.0 - tail) * k))])
    if not (np.isfinite(low) and np.isfinite(high)):
        return None
    return Interval(low, high)


def identified_share(confidence: float) -> float:
    """The share of resamples that must give a value for a central interval to be identified."""
    return 1.0 - (1.0 - confidence) / 2.0
