"""`isoflop forecast FILE`: how well would this sweep pin down the exponents, before spending?"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from threadpoolctl import threadpool_limits

from isoflop import api

if TYPE_CHECKING:
    from isoflop.sweep.forecast import BatchBasin, RateBasin
from isoflop.cli.common import LAW_HELP, HelpFormatter, Subparsers, UsageError
from isoflop_trainer.progress import progress_bar


def register(sub: Subparsers) -> None:
    p = sub.add_parser(
        "forecast",
        formatter_class=HelpFormatter,
        help="how well would this sweep pin down the exponents?",
    )
    p.add_argument("file", help="a ScalingSweep manifest (YAML)")
    p.add_argument("--runs", type=int, default=40, help="simulated sweeps")
    p.add_argument("--law", help=LAW_HELP + "[,gamma] (default: reproduces the paper's laws)")
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
    p.add_argument(
        "--method",
        choices=["parabola", "parametric"],
        default="parabola",
        help="the fit each simulated sweep gets",
    )
    p.add_argument("--window", type=float, help="local-fit loss rise (0: whole ladder)")
    p.add_argument("--target", type=float, help="the N* exponent precision (+-) you need")
    p.add_argument("--no-variants", action="store_true", help="skip the grid changes")
    p.add_argument(
        "--strategies",
        action="store_true",
        help="also compare the full grid with WSD branches and adaptive ladders on the same law",
    )
    p.add_argument(
        "--rates",
        metavar="BASIN",
        help="also compare one learning rate, the 1/width rule and the tuning stage on losses "
        "that depend on the rate: 'centred' (Step Law's exponents, the spec's rate optimal at "
        "the grid's middle trial, depth 0.2) or coefficient,alpha,beta,depth",
    )
    p.add_argument(
        "--batches",
        metavar="BASIN",
        help="also compare one rate and batch, the tuning stage on rates, and on rates then "
        "batches, on losses that depend on both: 'centred' (Step Law's, the spec's rate and "
        "batch optimal at the grid's middle trial, depths 0.2 and 0.1) or coefficient,beta,depth "
        "for the batch's basin",
    )
    p.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    from isoflop.local.modelcheck import model_checked
    from isoflop.sweep.forecast import (
        Law,
        forecast,
        forecast_size,
        format_forecast,
        law_from_results,
    )

    sweep = api.load_sweep(args.file)
    sweep = sweep.model_copy(update={"spec": model_checked(sweep.spec)})
    law = Law.parse(args.law) if args.law else Law()
    rate_basin, batch_basin = basins(args, sweep.spec)  # a bad one is refused before any work
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
    size = forecast_size(sweep.spec, args.runs, not args.no_variants)
    with threadpool_limits(limits=1), progress_bar("simulated sweeps", size) as advance:
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
            progress=advance,
        )
    print(format_forecast(result))
    if sweep.spec.confirm:
        from isoflop.sweep.forecast_confirm import format_confirm, simulate_confirm

        noise = 0.005 if noise is None else noise
        with threadpool_limits(limits=1), progress_bar("confirmations", args.runs) as advance:
            confirm = simulate_confirm(
                sweep.spec, law, noise, args.runs, args.bootstrap, progress=advance
            )
        print()
        print(format_confirm(confirm, args.runs, noise))
    if args.rates:
        from dataclasses import replace

        from isoflop.sweep.forecast_rates import WAYS, format_rates, simulate_rates

        assert rate_basin is not None
        basin = rate_basin
        noise = 0.005 if noise is None else noise
        with threadpool_limits(limits=1), progress_bar("rates", args.runs * len(WAYS)) as advance:
            rates = simulate_rates(
                sweep.spec, replace(law, rates=basin), noise, args.runs, args.bootstrap,
                progress=advance,
            )  # fmt: skip
        print()
        print(format_rates(rates, args.runs, noise, basin))
    if args.batches:
        from dataclasses import replace

        from isoflop.sweep.forecast_batches import BATCH_WAYS, format_batches, simulate_batches
        from isoflop.sweep.forecast_rates import centred_basin

        assert batch_basin is not None
        noise = 0.005 if noise is None else noise
        both = replace(law, rates=centred_basin(sweep.spec), batches=batch_basin)
        size = args.runs * len(BATCH_WAYS)
        with threadpool_limits(limits=1), progress_bar("batches", size) as advance:
            found = simulate_batches(
                sweep.spec, both, noise, args.runs, args.bootstrap, progress=advance
            )
        print()
        print(format_batches(found, args.runs, noise, batch_basin))
    if args.strategies:
        from isoflop.sweep.forecast import compare_strategies, format_strategies
        from isoflop.sweep.strategy import STRATEGIES

        noise = 0.005 if noise is None else noise
        size = args.runs * len(STRATEGIES)
        with threadpool_limits(limits=1), progress_bar("strategies", size) as advance:
            rows = compare_strategies(
                sweep.spec, law, noise, args.runs, args.bootstrap, window=window, progress=advance
            )
        print()
        print(format_strategies(rows, args.runs, noise))
    return 0


def basins(
    args: argparse.Namespace, spec: api.ScalingSweepSpec
) -> tuple[RateBasin | None, BatchBasin | None]:
    """--rates and --batches as basins (UsageError: one that does not parse)."""
    from isoflop.sweep.forecast import BatchBasin, RateBasin
    from isoflop.sweep.forecast_batches import centred_batches
    from isoflop.sweep.forecast_rates import centred_basin

    try:
        rates = batches = None
        if args.rates:
            rates = centred_basin(spec) if args.rates == "centred" else RateBasin.parse(args.rates)
        if args.batches:
            batches = (
                centred_batches(spec)
                if args.batches == "centred"
                else BatchBasin.parse(args.batches)
            )
    except ValueError as err:
        raise UsageError(str(err)) from None
    return rates, batches
