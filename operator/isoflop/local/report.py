"""What a finished (or stopped) local run leaves for a reader: trials.csv, plots/ and report.md.

Pure formatting over the run's plan, states and status; the run (isoflop.local.runner) decides
when to write them and whether its fit is stale.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING

from isoflop import __version__, api
from isoflop.sweep.engine import TrialState
from isoflop.sweep.plan import Plan, format_flops

if TYPE_CHECKING:
    from isoflop.fit.plots import ConfirmPoint

COLUMNS = ["id", "budget", "depth", "width", "params", "tokens", "steps", "phase", "attempts",
           "loss", "loss_se"]  # fmt: skip


def fit_key(
    spec: api.ScalingSweepSpec,
    rows: list[dict[str, float]],
    budgets: tuple[float, ...],
    final: bool,
) -> str:
    """What a fit depends on: the results of its budgets, the fit settings, the code's version."""
    chosen = [r for r in rows if r["budget"] in budgets]
    data = [chosen, spec.fit.to_wire(), final, __version__]
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def write_trials_csv(
    path: Path, p: Plan, states: dict[str, TrialState], skipped: Collection[str]
) -> None:
    """One row per planned trial; the evaluator's other metrics (fid, bpd) as extra columns,
    which `isoflop fit` reads as metrics."""
    metrics = sorted({k for s in states.values() for k, _ in s.metrics if k != "loss_se"})
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*COLUMNS, *metrics])
        for t in p.trials:
            s = states.get(t.id, TrialState())
            measured = dict(s.metrics)
            w.writerow(
                [
                    *(t.id, t.budget, t.depth, t.width, t.params, t.tokens, t.steps),
                    "Skipped" if t.id in skipped else s.phase,
                    s.attempts,
                    "" if s.loss is None else s.loss,
                    measured.get("loss_se", ""),
                    *(measured.get(m, "") for m in metrics),
                ]
            )


def report_markdown(
    sweep: api.ScalingSweep,
    status: api.ScalingSweepStatus,
    fit_text: str | None,
    elapsed: float,
) -> str:
    spec = sweep.spec
    lines = [
        f"# isoflop sweep `{sweep.name}`",
        "",
        f"- phase: **{status.phase}** ({status.progress} trials finished, "
        f"{status.counts.failed} failed, {status.counts.infeasible} infeasible)",
        f"- model family: {spec.model.family}; FLOPs counted as {spec.flops_accounting}",
        f"- budgets: {', '.join(format_flops(b) for b in spec.budgets)}",
        f"- wall time: {elapsed / 60:.1f} min",
        *strategy_lines(spec, status.strategy),
        "",
    ]
    lines += tuning_lines(status.tuning)
    lines += tracking_lines(status.tracking)
    if fit_text is not None:
        lines += ["## Fitted laws", "", "```", fit_text, "```", ""]
        lines += ["![isoFLOP curves](plots/isoflop.png)", "", "![laws](plots/laws.png)", ""]
    lines += confirmation_lines(status.confirmations)
    lines += [
        "## Trials",
        "",
        "| trial | params | tokens | learning rate | phase | attempts | loss | trained as |",
        "|---|---:|---:|---:|---|---:|---:|---|",
    ]
    default = f"{spec.training.learning_rate:.3g}" + (
        " (scaled)" if spec.training.learning_rate_scaling != "none" else ""
    )
    for r in status.trials:
        loss = "" if r.loss is None else f"{r.loss:.4f}"
        how = {
            "branch": f"cooldown from {r.branched_from} at step {r.branch_step}",
            "stable": "stable run (not a fit point)",
            "tuning": "tuning (not a fit point)",
        }.get(r.kind or "", "from scratch")
        rate = f"{r.learning_rate:.3g}" if r.learning_rate is not None else default
        if r.learning_rate is None and spec.tuning is not None:
            rate = ""  # not launched: its rate comes from the tuning law
        lines.append(
            f"| {r.id} | {r.params:,} | {r.tokens:,} | {rate} | {r.phase} | {r.attempts} "
            f"| {loss} | {how} |"
        )
    return "\n".join(lines) + "\n"


def tracking_lines(st: api.TrackingStatus | None) -> list[str]:
    """Where the runs are in MLflow, and what the tracker did not take."""
    if st is None:
        return []
    where = st.experiment_url or st.experiment_id or "not reached"
    lines = [f"- MLflow experiment `{st.experiment}`: {where}", ""]
    if st.not_logged:
        lines += ["Not logged in MLflow (the sweep went on without it):", ""]
        lines += [f"- {line}" for line in st.not_logged] + [""]
    return lines


def tuning_lines(st: api.TuningStatus | None) -> list[str]:
    """The report's account of the tuning stage: each rung's optimum, the law, its cost."""
    if st is None:
        return []
    lines = [
        "## Learning-rate tuning",
        "",
        f"{st.phase}: {st.message}. {st.trials} tuning trials, "
        f"{format_flops(st.planned_flops)} FLOPs ({st.grid_fraction:.1%} of the full grid).",
        "",
    ]
    law = st.law
    if law is not None:

        def term(value: float | None, ci: api.Interval | None, name: str) -> str:
            if value is None:
                return ""
            shown = "not identified" if ci is None else f"[{ci.low:.3f}, {ci.high:.3f}]"
            return f" x {name}^{value:.3f} {shown}"

        lines += [
            f"- law ({law.form}, {law.points} optima): eta* = {law.coefficient:.4g}"
            + term(law.params_exponent, law.params_exponent_interval, "N")
            + term(law.tokens_exponent, law.tokens_exponent_interval, "D")
            + term(law.compute_exponent, law.compute_exponent_interval, "C")
            + f"; scatter {law.residual_std:.3f} decades",
            "",
            "![loss against learning rate](plots/rates.png)",
            "",
        ]
    batch = st.batch_law
    if batch is not None:
        ci = batch.tokens_exponent_interval
        exponent = (
            ""
            if batch.tokens_exponent is None
            else f" x D^{batch.tokens_exponent:.3f} "
            + ("not identified" if ci is None else f"[{ci.low:.3f}, {ci.high:.3f}]")
        )
        lines += [
            f"- batch law ({batch.form}, {batch.points} optima): B* = {batch.coefficient:.4g}"
            f"{exponent}; scatter {batch.residual_std:.3f} decades",
            "",
        ]
    batches = any(g.batch_trials for g in st.groups)
    head = "| budget | rung | params | tokens | rates tried | best learning rate |"
    rule = "|---|---|---:|---:|---:|---|"
    if batches:
        head, rule = head + " batches tried | best batch |", rule + "---:|---|"
    lines += [head, rule]
    for g in st.groups:
        row = (
            f"| {format_flops(g.budget)} | {g.rung} | {g.params:,} | {g.tokens:,} | {g.trials} "
            f"| {best_text(g.best_learning_rate, g.edge, g.problem)} |"
        )
        if batches:
            best_batch = best_text(g.best_batch_size, g.batch_edge, g.batch_problem)
            row += f" {g.batch_trials} | {best_batch} |"
        lines.append(row)
    return [*lines, ""]


def best_text(best: float | None, edge: str | None, problem: str | None) -> str:
    """A tuning group's optimum, or where it stands without one."""
    if best is not None:
        return f"{best:.3g}"
    if edge is not None:
        return f"at the {'upper' if edge == 'high' else 'lower'} edge"
    return problem or "open"


def confirmation_lines(confirmations: list[api.Confirmation]) -> list[str]:
    """The report's account of spec.confirm's runs: the model the laws chose, the loss they
    predicted before it trained, and what it measured."""
    if not confirmations:
        return []
    lines = [
        "## Confirmation",
        "",
        "The model the final laws call compute-optimal, trained at a budget above the grid; its "
        "loss was predicted (fitted surface L(N, D); interval: the surface's uncertainty, one "
        "trial's noise and the form's drift beyond the grid) before it started.",
        "",
        "| budget | N* predicted | model | params | steps | GPU-hours (H100) | predicted loss "
        "| interval | measured | verdict |",
        "|---|---:|---|---:|---:|---:|---:|---|---:|---|",
    ]
    for c in confirmations:
        interval = c.loss_interval
        shown = (
            "not identified" if interval is None else f"[{interval.low:.4f}, {interval.high:.4f}]"
        )
        measured = "" if c.measured_loss is None else f"{c.measured_loss:.4f}"
        hours = "" if c.gpu_hours is None else f"{c.gpu_hours:.3g}"
        verdict = c.message or c.phase
        predicted = "" if c.predicted_loss is None else f"{c.predicted_loss:.4f}"
        if c.params is None or c.steps is None:  # not predicted: the reason only
            lines.append(f"| {format_flops(c.budget)} | | | | | | | | | {verdict} |")
            continue
        n_star = "" if c.predicted_params is None else f"{c.predicted_params:.4g}"
        lines.append(
            f"| {format_flops(c.budget)} | {n_star} | depth {c.depth}, width {c.width} "
            f"| {c.params:,} | {c.steps:,} | {hours} | {predicted} | {shown} | {measured} "
            f"| {verdict} |"
        )
    notes = [f"- {c.trial}: {c.note}" for c in confirmations if c.note]
    return [*lines, "", *notes, *([""] if notes else [])]


def strategy_lines(spec: api.ScalingSweepSpec, st: api.StrategyStatus | None) -> list[str]:
    """The report's account of what the strategy trained and saved."""
    if st is None:
        return []
    parts = []
    if spec.strategy.wsd_branches is not None:
        w = spec.strategy.wsd_branches
        parts.append(
            f"{st.branches} trials as WSD cooldown branches ({w.cooldown:g} of their steps, "
            f"{w.decay_shape}) from {st.stable_segments} stable-run segments"
        )
    if spec.strategy.adaptive is not None:
        parts.append(f"{st.skipped} trials left out by the adaptive ladder")
    return [
        f"- strategy: {'; '.join(parts)}",
        f"- compute: {format_flops(st.planned_flops)} FLOPs planned, "
        f"{st.compute_fraction:.3f} of the full grid from scratch "
        f"({format_flops(st.full_grid_flops)}); {format_flops(st.spent_flops)} spent",
    ]


def confirm_points(confirmations: list[api.Confirmation]) -> list[ConfirmPoint]:
    """The confirmations as the laws plot draws them."""
    from isoflop.fit.plots import ConfirmPoint  # matplotlib: only when plotting

    return [
        ConfirmPoint(
            c.budget,
            c.predicted_loss,
            None if c.loss_interval is None else (c.loss_interval.low, c.loss_interval.high),
            c.measured_loss,
        )
        for c in confirmations
        if c.predicted_loss is not None
    ]
