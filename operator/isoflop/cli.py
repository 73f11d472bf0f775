"""The `isoflop` command line: run, plan, fit, forecast, validate, crd."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from threadpoolctl import threadpool_limits

from isoflop import __version__, api
from isoflop.api import crd
from isoflop.sweep.check import runnable_plan
from isoflop.sweep.plan import (
    DEFAULT_MFU,
    H100_BF16_PEAK_FLOPS,
    H100_MFU_CURVE,
    MfuCurve,
    Plan,
    format_flops,
    plan,
)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, unless it has none or its help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, []) or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class UsageError(Exception):
    """A problem the user can fix; printed as one sentence, exit code 2."""


def si(x: float, unit: str = "") -> str:
    """1234567 -> '1.23M'."""
    for factor, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= factor:
            return f"{x / factor:.3g}{suffix}{unit}"
    return f"{x:.3g}{unit}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain, right-aligned text table."""
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def format_plan(p: Plan, mfu: MfuCurve, peak: float) -> str:
    headers = [
        "budget",
        "trial",
        "depth",
        "width",
        "params",
        "tok/sample",
        "steps",
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


def cmd_validate(args: argparse.Namespace) -> int:
    """Check a manifest, and unless --no-data, that its data exists and fits it."""
    from isoflop.sweep.datacheck import check_data

    sweep = api.load_sweep(args.file)
    planned = runnable_plan(sweep.spec)
    report = None if args.no_data else check_data(sweep.spec, planned)
    print(f"{args.file}: ScalingSweep '{sweep.name}' is valid.")
    if report is not None:
        print(report.text())
    return 0


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


def cmd_plan(args: argparse.Namespace) -> int:
    mfu = mfu_curve(args)
    if args.peak_tflops <= 0:
        raise UsageError(f"--peak-tflops must be positive, got {args.peak_tflops}")
    sweep = api.load_sweep(args.file)
    p = plan(sweep.spec)
    peak = args.peak_tflops * 1e12
    if args.json:
        print(json.dumps(p.to_json(mfu, peak), indent=2))
    else:
        print(f"ScalingSweep '{sweep.name}' ({sweep.spec.model.family})")
        print(format_plan(p, mfu, peak))
        if (line := strategy_text(sweep.spec, p)) is not None:
            print(line)
        if (line := packing_text(sweep.spec, p, mfu, peak)) is not None:
            print(line)
    return 0


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


def cmd_fit(args: argparse.Namespace) -> int:
    from isoflop import fit
    from isoflop.fit.report import format_comparison, format_text, to_result

    if args.bootstrap < 0:
        raise UsageError(f"--bootstrap must be 0 or more, got {args.bootstrap}")
    if args.bin is not None and not args.bin > 0:
        raise UsageError(f"--bin must be a positive width in decades of C, got {args.bin}")
    points = fit.read_table(args.table).grouped(args.bin)
    hold_out: float | str | None = None
    uses_parabolas = args.method != "parametric"  # the hold-out check compares parabolas
    if args.hold_out == "largest":
        hold_out = "largest" if len(points.budgets) >= 3 and uses_parabolas else None
    elif args.hold_out != "none":
        try:
            hold_out = float(args.hold_out)
        except ValueError:
            raise UsageError(
                f"--hold-out must be a budget, largest or none, got {args.hold_out!r}"
            ) from None
        if not uses_parabolas:
            raise UsageError("--hold-out compares isoFLOP parabolas: use --method parabola or both")

    def analyze(table: fit.Points, **extra: Any) -> fit.Analysis:
        with threadpool_limits(limits=1):  # many tiny solves: one BLAS thread is fastest
            return fit.analyze(
                table,
                method=args.method,
                bootstrap=args.bootstrap,
                seed=args.seed,
                confidence=args.confidence,
                irreducible=args.irreducible,
                window=None if args.window == 0 else args.window,
                noise=args.noise,
                **extra,
            )

    try:
        analysis = analyze(points, predict=args.predict, hold_out=hold_out)
    except ValueError as err:
        if len(points.budgets) > len(points) / 2:  # most budgets hold one trial: measured FLOPs
            raise UsageError(
                f"{err}; {len(points.budgets)} distinct budgets for {len(points)} trials look like "
                "measured FLOPs: group measured budgets with --bin DECADES (e.g. --bin 0.1)"
            ) from None
        raise
    comparison = None
    if args.compare:
        other = analyze(fit.read_table(args.compare).grouped(args.bin))
        comparison = fit.compare(analysis, other, args.confidence)
    plots = []
    if args.plot:
        from isoflop.fit.plots import plot_all

        try:
            plots = plot_all(points, analysis, args.plot)
        except OSError as err:
            raise UsageError(f"cannot write plots to {args.plot}: {err.strerror or err}") from None
    if args.json:
        out = to_result(analysis).to_wire()
        if comparison is not None:
            out["comparison"] = {
                "differences": [
                    {
                        "law": d.law,
                        "first": d.first,
                        "second": d.second,
                        "difference": d.difference,
                        "interval": None if d.ci is None else [d.ci.low, d.ci.high],
                        "significant": d.significant,
                    }
                    for d in comparison.differences
                ],
                "moreData": comparison.more_data,
            }
        print(json.dumps(out, indent=2))
        return 0
    print(format_text(analysis))
    if comparison is not None:
        print()
        print(format_comparison(comparison, *table_labels(Path(args.table), Path(args.compare))))
    for p in plots:
        print(f"wrote {p}")
    return 0


def table_labels(first: Path, second: Path) -> tuple[str, str]:
    """Names for two compared tables: the sweep of the run directory each lies in (its state.json),
    else the file's name; the folder's, then the whole path, where those are the same."""

    def sweep_of(table: Path) -> str | None:
        try:
            name = json.loads((table.parent / "state.json").read_text()).get("sweep")
        except (OSError, ValueError, AttributeError):
            return None
        return name if isinstance(name, str) and name else None

    for names in (
        (sweep_of(first) or first.stem, sweep_of(second) or second.stem),
        (first.parent.name or first.stem, second.parent.name or second.stem),
        (str(first), str(second)),
    ):
        if names[0] != names[1]:
            return names
    return str(first), str(second)


def cmd_run(args: argparse.Namespace) -> int:
    from isoflop.local.backends import make_backend
    from isoflop.local.devices import DeviceError, parse_gpus
    from isoflop.local.runner import Display, Run, RunError
    from isoflop.sweep.forecast import Law

    sweep = api.load_sweep(args.file)
    if args.parallelism is not None:
        if args.parallelism < 1:
            raise UsageError(f"--parallelism must be at least 1, got {args.parallelism}")
        spec = sweep.spec.model_copy(update={"parallelism": args.parallelism})
        sweep = sweep.model_copy(update={"spec": spec})
    law = Law.parse(args.law) if args.law else Law()
    planned = runnable_plan(sweep.spec)
    if not args.simulate:  # a real run: its data must be there before any trial starts
        from isoflop.sweep.datacheck import check_data

        report = check_data(sweep.spec, planned)
        if report.train is not None:
            print(f"isoflop: {report.text()}", flush=True)
    directory = Path(args.run_dir or Path("runs") / sweep.name)
    try:
        gpus = None if args.gpus is None else parse_gpus(args.gpus)
        backend = make_backend(
            "simulated" if args.simulate else "local", sweep.spec, law, args.noise, gpus
        )
    except DeviceError as err:
        raise UsageError(str(err)) from None
    try:
        run = Run(sweep, directory, backend)
    except RunError as err:
        raise UsageError(str(err)) from None
    done = sum(s.phase == "Succeeded" for s in run.states.values())
    kind = "simulated" if args.simulate else "local"
    resumed = f", resuming with {done} finished" if run.states else ""
    print(
        f"isoflop: sweep '{sweep.name}': {len(run.plan.trials)} trials ({kind}), "
        f"run directory {directory}{resumed}",
        flush=True,
    )
    for line in [*run.notices, *run.recovered]:
        print(f"isoflop: {line}", flush=True)
    try:
        decision = run.run(Display(live=False if args.plain else None))
    except KeyboardInterrupt:
        done = sum(s.phase == "Succeeded" for s in run.states.values())
        print(
            f"\nisoflop: interrupted with {done} trials finished; state saved in {directory}. "
            "Run the same command again to resume.",
            file=sys.stderr,
        )
        return 130
    except OSError as err:  # a full disk, a folder gone: one sentence, the run resumable
        where = f" {err.filename}" if err.filename else ""
        print(
            f"isoflop: error: cannot write{where}: {err.strerror or err}. Finished trials are "
            f"kept in {directory}; free the space and run the same command again to resume.",
            file=sys.stderr,
        )
        return 1
    print()
    if run.fit_text is not None:
        print(run.fit_text)
        print()
    print(f"isoflop: {decision.phase}: {decision.message}. Report: {directory / 'report.md'}")
    return 0 if decision.phase == "Succeeded" else 1


def cmd_forecast(args: argparse.Namespace) -> int:
    from isoflop.sweep.forecast import Law, forecast, format_forecast, law_from_results

    sweep = api.load_sweep(args.file)
    law = Law.parse(args.law) if args.law else Law()
    noise = args.noise
    if args.law and args.results_from:
        raise UsageError("give --law or --from, not both")
    if args.results_from:
        from isoflop.fit import read_table

        law, measured = law_from_results(read_table(args.results_from))
        if noise is None:
            if measured is None:
                raise UsageError(
                    f"{args.results_from} does not measure the noise (3 model sizes per budget, "
                    "no replicates): give --noise"
                )
            noise = measured
        print(f"Law fitted to {args.results_from}: {law.text()}; noise {noise:.2%}")
    window = sweep.spec.fit.window if args.window is None else (args.window or None)
    with threadpool_limits(limits=1):
        result = forecast(
            sweep.spec,
            law,
            noise=0.005 if noise is None else noise,
            runs=args.runs,
            bootstrap=args.bootstrap,
            method=args.method,
            window=window,
            target=args.target,
            variants=not args.no_variants,
        )
    print(format_forecast(result))
    if args.strategies:
        from isoflop.sweep.forecast import compare_strategies, format_strategies

        noise = 0.005 if noise is None else noise
        with threadpool_limits(limits=1):
            rows = compare_strategies(
                sweep.spec, law, noise, args.runs, args.bootstrap, window=window
            )
        print()
        print(format_strategies(rows, args.runs, noise))
    return 0


def _budgets(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of FLOPs") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of FLOPs")
    return value


def cmd_crd(args: argparse.Namespace) -> int:
    # default: the repository's crds/ and the chart's copy, which must stay identical
    paths = [Path(args.output)] if args.output else [crd.CRD_PATH, crd.CHART_CRD_PATH]
    if args.check:
        stale = [p for p in paths if not p.exists() or p.read_text() != crd.render()]
        if stale:
            names = " and ".join(map(str, stale))
            verb = "is" if len(stale) == 1 else "are"
            raise UsageError(f"{names} {verb} out of date with isoflop.api; run `isoflop crd`")
        print(f"{', '.join(map(str, paths))} up to date.")
        return 0
    if args.output == "-":
        sys.stdout.write(crd.render())
        return 0
    for path in paths:
        try:
            crd.write(path)
        except OSError as err:
            raise UsageError(f"cannot write {path}: {err.strerror or err}") from None
        print(f"wrote {path}")
    return 0


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="isoflop", description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--version", action="version", version=f"isoflop {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)

    law_help = "the simulated L(N,D) = E + A/N^alpha + B/D^beta as E,A,B,alpha,beta"
    p = sub.add_parser(
        "run",
        formatter_class=HelpFormatter,
        help="run a sweep on this machine (CPU or local GPUs), resumably",
    )
    p.add_argument("file")
    p.add_argument("--run-dir", help="where state, logs and results go (default: runs/NAME)")
    p.add_argument("--simulate", action="store_true", help="draw losses from a known law instead")
    p.add_argument("--law", help=law_help)
    p.add_argument("--noise", type=float, default=0.005, help="simulated multiplicative noise")
    p.add_argument("--parallelism", type=int, help="trials at once (default: the spec's)")
    p.add_argument(
        "--gpus",
        help="GPUs to use, e.g. 0,1,2,3, or none (default: CUDA_VISIBLE_DEVICES, else all); each "
        "trial gets spec.resources.gpusPerNode of them, never shared",
    )
    p.add_argument("--plain", action="store_true", help="one line per event, no live display")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "forecast",
        formatter_class=HelpFormatter,
        help="how well would this sweep pin down the exponents?",
    )
    p.add_argument("file")
    p.add_argument("--runs", type=int, default=40, help="simulated sweeps")
    p.add_argument("--law", help=law_help + "[,gamma] (default: reproduces the paper's laws)")
    p.add_argument(
        "--noise", type=float, help="relative noise of one loss (default: 0.005, or the pilot's)"
    )
    p.add_argument(
        "--from",
        dest="results_from",
        metavar="TABLE",
        help="a pilot's results (e.g. runs/NAME/trials.csv): simulate its fitted surface and noise",
    )
    p.add_argument("--bootstrap", type=int, default=200, help="resamples per simulated fit")
    p.add_argument("--method", choices=["parabola", "parametric"], default="parabola")
    p.add_argument("--window", type=float, help="local-fit loss rise (0: whole ladder)")
    p.add_argument("--target", type=float, help="the N* exponent precision (+-) you need")
    p.add_argument("--no-variants", action="store_true", help="skip the grid changes")
    p.add_argument(
        "--strategies",
        action="store_true",
        help="also compare the full grid with WSD branches and adaptive ladders on the same law",
    )
    p.set_defaults(func=cmd_forecast)

    p = sub.add_parser(
        "validate",
        formatter_class=HelpFormatter,
        help="check a ScalingSweep manifest and its data",
        description=cmd_validate.__doc__,
    )
    p.add_argument("file")
    p.add_argument(
        "--no-data", action="store_true", help="check the manifest only, not its data source"
    )
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser(
        "plan",
        formatter_class=HelpFormatter,
        help="print the isoFLOP grid of a ScalingSweep manifest",
    )
    p.add_argument("file")
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
        "--peak-tflops",
        type=float,
        default=H100_BF16_PEAK_FLOPS / 1e12,
        help="GPU peak TFLOP/s for the estimate (default: H100 bf16 dense)",
    )
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser(
        "fit",
        formatter_class=HelpFormatter,
        help="fit scaling laws to a table of trial results (CSV or JSON)",
    )
    p.add_argument("table", help="rows of budget, params, tokens (or data), loss, optional metrics")
    p.add_argument("--method", choices=["parabola", "parametric", "both"], default="both")
    p.add_argument("--bootstrap", type=int, default=1000, help="resamples for intervals (0: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--confidence", type=float, default=0.95)
    p.add_argument(
        "--predict",
        type=_budgets,
        nargs="+",
        default=[],
        metavar="C",
        help="budgets (FLOPs) to predict N*, D*, L* at",
    )
    p.add_argument(
        "--hold-out",
        default="largest",
        metavar="C|largest|none",
        help="budget to leave out and predict as a check (default: largest)",
    )
    p.add_argument("--irreducible", action="store_true", help="also fit L*(C) = E + A C^-g")
    p.add_argument(
        "--bin",
        type=float,
        metavar="DECADES",
        help="group measured budgets into bins this wide in log10 C (default: within 0.1%%)",
    )
    p.add_argument(
        "--noise",
        type=float,
        help="relative noise of one loss, if known (default: measured, replicates or residuals)",
    )
    p.add_argument(
        "--window",
        type=float,
        default=api.FitSpec.model_fields["window"].default,
        help="fit each parabola around its minimum, to this relative loss rise (0: every rung)",
    )
    p.add_argument("--compare", metavar="OTHER", help="a second table to compare exponents with")
    p.add_argument(
        "--plot", metavar="DIR", help="write isoflop.png, laws.png (and parametric.png) here"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser(
        "crd",
        formatter_class=HelpFormatter,
        help="write the CustomResourceDefinition generated from the API",
    )
    p.add_argument(
        "--output",
        "-o",
        help=f"path, or - for stdout (default: {crd.CRD_PATH} and {crd.CHART_CRD_PATH})",
    )
    p.add_argument("--check", action="store_true", help="fail if the file differs")
    p.set_defaults(func=cmd_crd)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except (UsageError, ValueError) as err:  # ManifestError is a ValueError
        print(f"isoflop: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `isoflop plan --json | head`: the reader has all it wanted
        # nothing more can reach stdout, not even the interpreter's flush at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE  # what a shell reports for a writer its reader left
    return code


if __name__ == "__main__":
    sys.exit(main())
