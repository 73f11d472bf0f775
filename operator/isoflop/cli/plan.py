"""`isoflop plan FILE`: the isoFLOP grid, exact FLOPs, GPU-hours, and what strategy and packing
change."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from isoflop import api
from isoflop.cli.common import HelpFormatter, Subparsers, UsageError, si, table
from isoflop.local.modelcheck import model_checked
from isoflop.sweep.confirm import Planned, plan_confirmations
from isoflop.sweep.forecast import Law
from isoflop.sweep.plan import (
    DEFAULT_MFU,
    H100_BF16_PEAK_FLOPS,
    H100_MFU_CURVE,
    Infeasible,
    MfuCurve,
    Plan,
    Trial,
    format_flops,
    plan,
    requested_batches,
    requested_rates,
)


def register(sub: Subparsers) -> None:
    p = sub.add_parser(
        "plan",
        formatter_class=HelpFormatter,
        help="print the isoFLOP grid of a ScalingSweep manifest",
    )
    p.add_argument("file", help="a ScalingSweep manifest (YAML)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--mfu",
        type=float,
        help="one MFU for every model size in the GPU-hour estimate (default: the trainer's "
        "measured H100 curve, 4.7%% at 5M parameters to 42%% at 800M)",
    )
    p.add_argument(
        "--mfu-curve",
        metavar="FILE",
        help="MFU by model size from JSON lines with params and mfu (benchmarks/"
        "bench_trainer.py output on your GPUs)",
    )
    p.add_argument(
        "--law",
        help="spec.confirm: the L(N, D) = E + A/N^alpha + B/D^beta (E,A,B,alpha,beta[,gamma]) "
        "whose N* picks the model shown for each confirmation (default: reproduces the paper's "
        "laws); the sweep's own final laws pick the model it trains",
    )
    p.add_argument(
        "--peak-tflops",
        type=float,
        default=H100_BF16_PEAK_FLOPS / 1e12,
        help="GPU peak TFLOP/s for the estimate (default: H100 bf16 dense)",
    )
    p.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    mfu = mfu_curve(args)
    if args.peak_tflops <= 0:
        raise UsageError(f"--peak-tflops must be positive, got {args.peak_tflops}")
    sweep = api.load_sweep(args.file)
    spec = model_checked(sweep.spec)
    sweep = sweep.model_copy(update={"spec": spec})
    p = plan(sweep.spec)
    peak = args.peak_tflops * 1e12
    try:
        law = Law.parse(args.law) if args.law else Law()
    except ValueError as err:
        raise UsageError(str(err)) from None
    confirms = plan_confirmations(sweep.spec, law)
    if args.json:
        print(
            json.dumps(
                {**p.to_json(mfu, peak), "confirm": confirm_json(confirms, mfu, peak)}, indent=2
            )
        )
    else:
        m = sweep.spec.model
        family = f"{m.family} {m.transformer}" if m.transformer else m.family
        print(f"ScalingSweep '{sweep.name}' ({family})")
        print(format_plan(p, mfu, peak, sweep.spec))
        if confirms:
            print(
                confirm_text(
                    confirms, mfu, peak, "the law given" if args.law else "the paper's law"
                )
            )
        if (line := strategy_text(sweep.spec, p)) is not None:
            print(line)
        if (line := packing_text(sweep.spec, p, mfu, peak)) is not None:
            print(line)
    return 0


def format_plan(p: Plan, mfu: MfuCurve, peak: float, spec: api.ScalingSweepSpec) -> str:
    """The grid's trials, a row each, with the learning rate and batch each trains at ("law":
    the tuning stage's, known once it has run), then the tuning stage's trials."""
    from isoflop.sweep.trials import learning_rate

    def rate(t: Trial) -> str:
        if t.learning_rate is not None:
            return f"{t.learning_rate:.3g}"
        return "law" if spec.tuning is not None else f"{learning_rate(spec, t.rung):.3g}"

    def batch(t: Trial) -> str:  # the batch law's, where batches are tuned: steps change too
        tuned = spec.tuning is not None and bool(spec.tuning.global_batch_sizes)
        return f"law ({t.batch_size})" if tuned else str(t.batch_size)

    headers = [
        "budget",
        "trial",
        "depth",
        "width",
        "params",
        "tok/sample",
        "steps",
        "batch",
        "lr",
        "samples",
        "tokens",
        "FLOPs exact",
        "6ND",
        "rounding",
        "MFU",
        "GPU-h",
    ]
    rows = [
        [
            format_flops(t.budget),
            t.id,
            str(t.depth),
            str(t.width),
            si(t.params),
            str(t.tokens_per_sample),
            str(t.steps),
            batch(t),
            rate(t),
            si(t.samples),
            si(t.tokens),
            f"{t.flops_exact:.4e}",
            f"{t.flops_6nd:.4e}",
            f"{t.rounding:+.2%}",
            f"{mfu.at(t.params):.1%}",
            f"{t.gpu_hours(mfu, peak):.3g}",
        ]
        for t in p.trials
    ]
    out = [table(headers, rows)]
    if p.tuning:
        out.append(tuning_text(spec, p, mfu, peak))
    if p.infeasible:
        out.append(f"\ninfeasible ({len(p.infeasible)}):")
        out += [f"  {i.id} ({si(i.params)} params): {i.reason}" for i in p.infeasible]
    exact = sum(t.flops_exact for t in p.trials)
    six_nd = sum(t.flops_6nd for t in p.trials)
    hours = sum(t.gpu_hours(mfu, peak) for t in p.trials)
    flat = sum(t.gpu_hours(DEFAULT_MFU, peak) for t in p.trials)
    budgets = len({t.budget for t in p.trials})
    out.append(
        f"\n{len(p.trials)} trials over {budgets} budgets (budgets counted as {p.accounting}); "
        f"{exact:.3e} FLOPs in all counted exactly ({six_nd:.3e} as 6ND). About {hours:.3g} "
        f"GPU-hours on a {peak / 1e12:.0f} TFLOP/s GPU, at {mfu.source}"
        + (f" ({flat:.3g} at a flat {DEFAULT_MFU:.0%})." if len(mfu.points) > 1 else ".")
    )
    return "\n".join(out)


def confirm_text(confirms: list[Planned], mfu: MfuCurve, peak: float, source: str) -> str:
    """spec.confirm's runs as `source` would choose them: N*, the model, N, D, steps, GPU-hours."""
    lines = [
        f"\nconfirm (the model chosen for N* by {source}; the sweep's own final laws choose the "
        "one it trains, and predict its loss before it starts):"
    ]
    for c in confirms:
        t = c.trial
        head = f"  {format_flops(c.budget)}: N* {si(c.n_star)}"
        if isinstance(t, Infeasible):
            lines.append(f"{head} -> {si(t.params)} params: not trainable ({t.reason})")
            continue
        lines.append(
            f"{head} -> depth {t.depth}, width {t.width}: {si(t.params)} params "
            f"({t.params:,}), D {si(t.tokens)} tokens, {t.steps:,} steps of batch {t.batch_size}, "
            f"{t.flops_exact:.3e} FLOPs exact, about {t.gpu_hours(mfu, peak):.3g} GPU-hours at "
            f"{mfu.at(t.params):.1%} MFU"
        )
        if c.note:
            lines.append(f"    {c.note}")
    return "\n".join(lines)


def confirm_json(confirms: list[Planned], mfu: MfuCurve, peak: float) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for c in confirms:
        t = c.trial
        row: dict[str, object] = {"budget": c.budget, "n_star": c.n_star, "note": c.note}
        if isinstance(t, Infeasible):
            row |= {"infeasible": t.reason, "params": t.params}
        else:
            row |= {
                "depth": t.depth,
                "width": t.width,
                "params": t.params,
                "tokens": t.tokens,
                "steps": t.steps,
                "flops_exact": t.flops_exact,
                "gpu_hours": t.gpu_hours(mfu, peak),
            }
        out.append(row)
    return out


def mfu_curve(args: argparse.Namespace) -> MfuCurve:
    """--mfu (one figure for every size), --mfu-curve FILE, or the trainer's H100 figures."""
    if args.mfu is not None and args.mfu_curve is not None:
        raise UsageError("give --mfu or --mfu-curve, not both")
    if args.mfu is not None:
        if not 0 < args.mfu <= 1:
            raise UsageError(f"--mfu must lie in (0, 1], got {args.mfu}")
        return MfuCurve.flat(args.mfu)
    if args.mfu_curve is not None:
        try:
            text = Path(args.mfu_curve).read_text()
        except OSError as err:
            raise UsageError(f"cannot read {args.mfu_curve}: {err.strerror or err}") from None
        try:
            return MfuCurve.from_jsonl(text, args.mfu_curve)
        except ValueError as err:
            raise UsageError(str(err)) from None
    return H100_MFU_CURVE


def packing_text(spec: api.ScalingSweepSpec, p: Plan, mfu: MfuCurve, peak: float) -> str | None:
    """What spec.resources.packing does to the plan: trials per GPU by rung, the GPU-hours."""
    from dataclasses import replace

    from isoflop.sweep.packing import Packing, sweep_mfu

    packing = replace(Packing.of(spec), curve=mfu)
    if packing.max_per_gpu <= 1:
        return None
    per_rung: dict[str, int] = {}
    for t in p.trials:
        per_rung[t.rung] = packing.per_gpu(t)
    packed = {r: k for r, k in per_rung.items() if k > 1}
    if not packed:
        return "\npacking: no rung is small enough to share a GPU."
    est = sweep_mfu(list(p.trials), packing, peak)
    shown = ", ".join(f"{r} x{k}" for r, k in packed.items())
    return (
        f"\npacking: {len(packed)} of {len(per_rung)} rungs share GPUs ({shown}): about "
        f"{est['gpu_hours_packed']:.3g} GPU-hours in place of {est['gpu_hours_alone']:.3g}, "
        f"sweep MFU {est['mfu_alone']:.1%} -> {est['mfu_packed']:.1%} (an estimate: packed "
        "trials assumed to keep their speed alone)."
    )


def tuning_text(spec: api.ScalingSweepSpec, p: Plan, mfu: MfuCurve, peak: float) -> str:
    """The tuning stage: where it tunes, its grid of rates, and its compute before the grid."""
    asked = set(requested_rates(spec))
    stage = [t for t in p.tuning if t.tunes == "rate"]
    first = [t for t in stage if t.learning_rate in asked]
    rates = sorted({t.learning_rate or 0.0 for t in stage})
    budgets = sorted({t.budget for t in p.tuning})
    rungs = list(dict.fromkeys(t.rung for t in sorted(p.tuning, key=lambda t: t.params)))
    grid = sum(t.flops for t in p.trials)
    flops = sum(t.flops for t in first)
    most = sum(t.flops for t in p.tuning)
    hours = sum(t.gpu_hours(mfu, peak) for t in first)
    shown = ", ".join(f"{r:.3g}" if r in asked else f"({r:.3g})" for r in rates)
    batches = ""
    if spec.tuning is not None and spec.tuning.global_batch_sizes:
        wanted = set(requested_batches(spec))
        trials = [t for t in p.tuning if t.tunes == "batch"]
        first_batches = [t for t in trials if t.batch_size in wanted]
        flops += sum(t.flops for t in first_batches)
        hours += sum(t.gpu_hours(mfu, peak) for t in first_batches)
        sizes = sorted({t.batch_size for t in trials})
        listed = ", ".join(str(b) if b in wanted else f"({b})" for b in sizes)
        batches = (
            f"; then, at each rung's best rate, global batches {listed} "
            f"({len(first_batches)} of the trials; a batch that leaves fewer than minSteps "
            "steps is left out)"
        )
        first = [*first, *first_batches]
    return (
        f"\ntuning: rungs {', '.join(rungs)} at {', '.join(format_flops(b) for b in budgets)} "
        f"FLOPs over learning rates {shown} (in parentheses: tried one at a time where a rung's "
        f"best sits at an edge){batches}: {len(first)} trials, {flops:.3e} FLOPs "
        f"({flops / grid:.1%} of the grid above; {most / grid:.1%} if every rung widens both "
        f"ways), about {hours:.3g} GPU-hours. Every grid trial then trains at the law "
        "eta*(N, D) fitted to their optima"
        + (" and the batch of B*(D), its steps resized to its budget." if batches else ".")
    )


def strategy_text(spec: api.ScalingSweepSpec, p: Plan) -> str | None:
    """What spec.strategy trains in place of the grid above, in a sentence or two."""
    from isoflop.sweep.strategy import graph

    wsd, adaptive = spec.strategy.wsd_branches, spec.strategy.adaptive
    if wsd is None and adaptive is None:
        return None
    try:
        g = graph(spec, p.trials)
    except ValueError as err:
        raise UsageError(f"spec.strategy.wsdBranches: {err}") from None
    parts = []
    if wsd is not None:
        segments = sum(n.kind == "stable" for n in g.nodes)
        own = sum(n.own_flops for n in g.nodes)
        parts.append(
            f"WSD branches: each trial trained as a {wsd.cooldown:g} cooldown ({wsd.decay_shape}) "
            f"from its rung's stable run, {segments} stable-run segments in all: {own:.3e} FLOPs, "
            f"{own / g.full_grid_flops:.3f} of the grid above"
        )
    if adaptive is not None:
        parts.append(
            f"adaptive ladder: the {adaptive.seed_budgets} smallest budgets train every rung, each "
            f"later one {adaptive.rungs} rungs {adaptive.stride} ladder steps apart around the N* "
            "fitted so far (widened until its "
            "minimum is bracketed): what it saves is known as it runs"
        )
    return "\nstrategy: " + "; ".join(parts) + "."
