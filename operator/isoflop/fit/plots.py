"""PNG plots of a sweep's analysis: isoFLOP curves and power laws (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

from isoflop.fit.analysis import Analysis
from isoflop.fit.data import Array, Points
from isoflop.fit.powerlaw import PowerLaw


def plot_isoflops(points: Points, analysis: Analysis, path: Path) -> Path:
    """Loss against N per budget, each with its fitted parabola and its minimum."""
    fig, ax = plt.subplots(figsize=(7, 5), dpi=120)
    colors = plt.get_cmap("viridis")(np.linspace(0.0, 0.9, max(len(analysis.budget_fits), 1)))
    for fit, color in zip(analysis.budget_fits, colors, strict=False):
        sel = points.budget == fit.budget
        n = points.params[sel]
        ax.scatter(n, points.loss[sel], color=color, s=18, zorder=3)
        lo, hi = np.log10(n.min()) - 0.1, np.log10(n.max()) + 0.1
        if fit.window is not None and np.isfinite(fit.loss_opt) and fit.a > 0:
            # a local parabola describes the curve near its minimum only: draw it there
            reach = 2 * np.sqrt(fit.window * fit.loss_opt / fit.a)
            x_opt = np.log10(fit.params_opt)
            lo, hi = max(lo, x_opt - reach), min(hi, x_opt + reach)
        x = np.linspace(lo, hi, 100)
        ax.plot(
            10**x,
            fit.a * x * x + fit.b * x + fit.c,
            color=color,
            lw=1.2,
            label=f"C = {fit.budget:.3g}",
        )
        if np.isfinite(fit.loss_opt):
            ax.scatter(
                [fit.params_opt],
                [fit.loss_opt],
                color=color,
                marker="*",
                s=120,
                edgecolor="black",
                zorder=4,
            )
    return save_loss_plot(fig, ax, "parameters N", "isoFLOP curves (stars: fitted optima)", path)


def save_loss_plot(
    fig: Any, ax: Any, xlabel: str, title: str, path: Path, minor_labels: bool = True
) -> Path:
    """Finish a plot of loss against a log-scaled x (labels, legend, grid) and write it."""
    ax.set_xscale("log")
    if not minor_labels:  # a few decades of rates: the minor labels crowd each other
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel(xlabel)
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


@dataclass(frozen=True)
class ConfirmPoint:
    """A confirmation run on the L* panel: the loss predicted for it, its prediction interval,
    and the loss it measured (None while it trains)."""

    budget: float
    predicted: float
    interval: tuple[float, float] | None
    measured: float | None


def plot_laws(analysis: Analysis, path: Path, confirmations: Sequence[ConfirmPoint] = ()) -> Path:
    """N*, D*, L* (and FID*, bpd*, ... when measured) against C: optima, fitted law, its
    confidence band, predictions, and confirmation runs against the extrapolated L*(C)."""
    laws = {**analysis.laws, **analysis.metric_laws}
    fig, axes = plt.subplots(1, len(laws), figsize=(5 * len(laws), 4.5), dpi=120, squeeze=False)
    fits = [f for f in analysis.budget_fits if np.isfinite(f.loss_opt)]
    c_obs = np.array([f.budget for f in fits])
    c_pred = np.array([p.budget for p in analysis.predictions])
    c_all = np.concatenate([c_obs, c_pred, [c.budget for c in confirmations]])
    grid = np.logspace(np.log10(c_all.min()) - 0.1, np.log10(c_all.max()) + 0.1, 100)
    observed = {
        "params": [f.params_opt for f in fits],
        "tokens": [f.tokens_opt for f in fits],
        "loss": [f.loss_opt for f in fits],
        **{m: [dict(f.metrics_opt).get(m, np.nan) for f in fits] for m in analysis.metric_laws},
    }
    labels = {"params": "N*", "tokens": "D*", "loss": "L*"}
    labels |= {m: f"{m.upper()} at N*" for m in analysis.metric_laws}
    for ax, (name, law) in zip(axes[0], laws.items(), strict=True):
        ax.scatter(c_obs, observed[name], color="black", s=20, zorder=3, label="isoFLOP optima")
        ax.plot(
            grid,
            law(grid),
            color="C0",
            label=f"{labels[name]} = {law.coefficient:.3g} C^{law.exponent:.4f}",
        )
        _band(ax, law, grid, analysis.confidence)
        if name == "loss" and analysis.loss_saturating is not None:
            s = analysis.loss_saturating
            label = f"L* = {s.irreducible:.3g} + {s.coefficient:.3g} C^-{s.decay:.3f}"
            ax.plot(grid, s(grid), color="C1", ls="--", label=label)
        _predictions(ax, analysis, name)
        if name == "loss":
            _confirmations(ax, confirmations)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("compute C (FLOPs)")
        ax.set_ylabel(labels[name])
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _band(ax: Any, law: PowerLaw, grid: Array, confidence: float) -> None:
    """The law's confidence band, from its bootstrap's (log coefficient, exponent) samples."""
    if law.samples is None or not len(law.samples[0]):
        return
    curves = 10 ** (law.samples[0][:, None] + law.samples[1][:, None] * np.log10(grid))
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(curves, [tail, 100 - tail], axis=0)
    ax.fill_between(grid, low, high, color="C0", alpha=0.2, label=f"{confidence:.0%} confidence")


def _predictions(ax: Any, analysis: Analysis, name: str) -> None:
    """Each predicted budget's value of this law, with its prediction interval."""
    for p in analysis.predictions:
        est = p.metrics.get(name) if name in analysis.metric_laws else getattr(p, name)
        if est is None:
            continue
        err = None
        if est.pi is not None:
            err = [[est.value - est.pi.low], [est.pi.high - est.value]]
        label = "prediction" if p is analysis.predictions[0] else None
        ax.errorbar([p.budget], [est.value], yerr=err, fmt="o", color="C3", capsize=3, label=label)


def _confirmations(ax: Any, confirmations: Sequence[ConfirmPoint]) -> None:
    """Each confirmation's predicted loss with its interval, and the loss it measured."""
    for i, c in enumerate(confirmations):
        err = None
        if c.interval is not None:
            err = [[c.predicted - c.interval[0]], [c.interval[1] - c.predicted]]
        first = i == 0
        ax.errorbar(
            [c.budget], [c.predicted], yerr=err, fmt="s", mfc="none", color="C2", capsize=4,
            label="confirmation: predicted" if first else None,
        )  # fmt: skip
        if c.measured is not None:
            ax.scatter(
                [c.budget], [c.measured], marker="*", s=120, color="C2", zorder=4,
                label="confirmation: measured" if first else None,
            )  # fmt: skip


def plot_parametric(points: Points, analysis: Analysis, path: Path) -> Path:
    """Loss against N per budget with the parametric surface along each isoFLOP line, and the
    compute-optimal N*(C) it implies."""
    f = analysis.parametric
    assert f is not None
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5), dpi=120)
    budgets = np.unique(points.budget)
    colors = plt.get_cmap("viridis")(np.linspace(0.0, 0.9, max(len(budgets), 1)))
    for c, color in zip(budgets, colors, strict=False):
        sel = points.budget == c
        n = points.params[sel]
        left.scatter(n, points.loss[sel], color=color, s=18, zorder=3)
        grid = np.logspace(np.log10(n.min()) - 0.1, np.log10(n.max()) + 0.1, 100)
        left.plot(
            grid,
            f.loss(grid, c / (f.flops_per_param_token * grid)),
            color=color,
            lw=1.2,
            label=f"C = {c:.3g}",
        )
        n_opt, _, l_opt = f.optimum(c)
        left.scatter([n_opt], [l_opt], color=color, marker="*", s=120, edgecolor="black", zorder=4)
    left.set_xscale("log")
    left.set_xlabel("parameters N")
    left.set_ylabel("loss")
    left.set_title("parametric L(N, D) along each isoFLOP line (stars: optima)")
    left.legend(fontsize=7)
    left.grid(alpha=0.3, which="both")
    c_all = np.concatenate([budgets, [p.budget for p in analysis.predictions]])
    grid = np.logspace(np.log10(c_all.min()) - 0.1, np.log10(c_all.max()) + 0.1, 100)
    right.plot(
        grid, f.optimum(grid)[0], color="C0", label=f"N* ~ C^{f.params_exponent:.4f} (parametric)"
    )
    if f.samples is not None and len(f.samples):
        theta = f.samples
        from isoflop.fit.parametric import optimum

        curves = optimum(theta[:, None, :], grid[None, :], f.flops_per_param_token)[0]
        tail = (1 - analysis.confidence) / 2 * 100
        low, high = np.nanpercentile(curves, [tail, 100 - tail], axis=0)
        right.fill_between(
            grid, low, high, color="C0", alpha=0.2, label=f"{analysis.confidence:.0%} confidence"
        )
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("compute C (FLOPs)")
    right.set_ylabel("N*")
    right.grid(alpha=0.3, which="both")
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_all(
    points: Points,
    analysis: Analysis,
    directory: str | Path,
    confirmations: Sequence[ConfirmPoint] = (),
) -> list[Path]:
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    if analysis.budget_fits:
        paths.append(plot_isoflops(points, analysis, out / "isoflop.png"))
        paths.append(plot_laws(analysis, out / "laws.png", confirmations))
    if analysis.parametric is not None:
        paths.append(plot_parametric(points, analysis, out / "parametric.png"))
    return paths


@dataclass(frozen=True)
class RateCurve:
    """One rung of the tuning stage: its losses against learning rate, and its optimum."""

    label: str
    rates: tuple[float, ...]
    losses: tuple[float, ...]
    best: float | None


def plot_rates(curves: Sequence[RateCurve], path: Path) -> Path:
    """Loss against learning rate per tuning rung (log rate), each optimum marked."""
    fig, ax = plt.subplots(figsize=(7, 5), dpi=120)
    colors = plt.get_cmap("plasma")(np.linspace(0.0, 0.85, max(len(curves), 1)))
    for curve, color in zip(curves, colors, strict=False):
        order = np.argsort(curve.rates)
        rates, losses = np.asarray(curve.rates)[order], np.asarray(curve.losses)[order]
        ax.plot(rates, losses, "o-", color=color, ms=4, lw=1, label=curve.label)
        if curve.best is not None:
            ax.axvline(curve.best, color=color, lw=0.8, ls="--")
    title = "tuning stage: loss against learning rate (dashed: fitted optima)"
    return save_loss_plot(fig, ax, "peak learning rate", title, path, minor_labels=False)
