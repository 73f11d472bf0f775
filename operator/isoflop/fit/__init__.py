"""Scaling-law fitting: isoFLOP parabolas, power laws, the parametric L(N, D), predictions.

Pure numpy/scipy. Every fit validates its input and raises ValueError naming the problem, takes an
explicit seed for its bootstrap, and keeps confidence and prediction intervals apart.
"""

from isoflop.fit.analysis import (
    Analysis,
    Comparison,
    ExponentDifference,
    HoldOut,
    Prediction,
    analyze,
    compare,
)
from isoflop.fit.data import Points, read_table
from isoflop.fit.parabola import BudgetFit, fit_budget
from isoflop.fit.parametric import ParametricFit, fit_parametric
from isoflop.fit.powerlaw import PowerLaw, SaturatingLaw, fit_power_law, fit_saturating_law
from isoflop.fit.stats import Interval, Predicted

__all__ = [
    "Analysis",
    "BudgetFit",
    "Comparison",
    "ExponentDifference",
    "HoldOut",
    "Interval",
    "ParametricFit",
    "Points",
    "PowerLaw",
    "Predicted",
    "Prediction",
    "SaturatingLaw",
    "analyze",
    "compare",
    "fit_budget",
    "fit_parametric",
    "fit_power_law",
    "fit_saturating_law",
    "read_table",
]
