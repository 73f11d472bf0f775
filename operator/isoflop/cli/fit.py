"""`isoflop fit TABLE`: scaling laws fitted to a table of trial results."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from threadpoolctl import threadpool_limits

from isoflop import api
from isoflop.cli.common import HelpFormatter, Subparsers, UsageError
from isoflop_trainer.progress import progress_bar

if TYPE_CHECKING:  # imported when a command runs: `isoflop --help` loads no scipy
    from isoflop.fit import Analysis, Comparison, Points


def register(sub: Subparsers) -> None:
    p = sub.add_parser(
        "fit",
        formatter_class=HelpFormatter,
        help="fit scaling laws to a table of trial results (CSV or JSON)",
    )
    p.add_argument("table", help="rows of budget, params, tokens (or data), loss, optional metrics")
    p.add_argument(
        "--method",
        choices=["parabola", "parametric", "both"],
        default="both",
        help="isoFLOP parabolas and power laws, the parametric L(N, D), or both",
    )
    p.add_argument("--bootstrap", type=int, default=1000, help="resamples for intervals (0: none)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resamples")
    p.add_argument("--confidence", type=float, default=0.95, help="level of every interval")
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
    p.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    from isoflop import fit
    from isoflop.fit.report import format_comparison, format_text, to_result

    if args.bootstrap < 0:
        raise UsageError(f"--bootstrap must be 0 or more, got {args.bootstrap}")
    if args.bin is not None and not args.bin > 0:
        raise UsageError(f"--bin must be a positive width in decades of C, got {args.bin}")
    points = fit.read_table(args.table).grouped(args.bin)
    try:
        analysis = analyze(args, points, predict=args.predict, hold_out=hold_out(args, points))
    except ValueError as err:
        if len(points.budgets) > len(points) / 2:  # most budgets hold one trial: measured FLOPs
            raise UsageError(
                f"{err}; {len(points.budgets)} distinct budgets for {len(points)} trials look like "
                "measured FLOPs: group measured budgets with --bin DECADES (e.g. --bin 0.1)"
            ) from None
        raise
    comparison = None
    if args.compare:
        other = analyze(args, fit.read_table(args.compare).grouped(args.bin))
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
            out["comparison"] = comparison_json(comparison)
        print(json.dumps(out, indent=2))
        return 0
    print(format_text(analysis))
    if comparison is not None:
        print()
        print(format_comparison(comparison, *table_labels(Path(args.table), Path(args.compare))))
    for p in plots:
        print(f"wrote {p}")
    return 0


def hold_out(args: argparse.Namespace, points: Points) -> float | str | None:
    """--hold-out as the fit takes it: `largest` only where there are 3 budgets or more."""
    uses_parabolas = args.method != "parametric"  # the hold-out check compares parabolas
    if args.hold_out == "largest":
        return "largest" if len(points.budgets) >= 3 and uses_parabolas else None
    if args.hold_out == "none":
        return None
    try:
        budget = float(args.hold_out)
    except ValueError:
        raise UsageError(
            f"--hold-out must be a budget, largest or none, got {args.hold_out!r}"
        ) from None
    if not uses_parabolas:
        raise UsageError("--hold-out compares isoFLOP parabolas: use --method parabola or both")
    return budget


def analyze(args: argparse.Namespace, table: Points, **extra: Any) -> Analysis:
    """The fit the options ask for, with a progress bar over the parametric resamples (the
    slow part) on a terminal."""
    from isoflop import fit

    slow = args.bootstrap if args.method != "parabola" else 0
    with threadpool_limits(limits=1), progress_bar("parametric resamples", slow) as advance:
        return fit.analyze(
            table,
            method=args.method,
            bootstrap=args.bootstrap,
            seed=args.seed,
            confidence=args.confidence,
            irreducible=args.irreducible,
            window=None if args.window == 0 else args.window,
            noise=args.noise,
            progress=advance,
            **extra,
        )


def comparison_json(comparison: Comparison) -> dict[str, Any]:
    return {
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


def _budgets(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of FLOPs") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of FLOPs")
    return value


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
