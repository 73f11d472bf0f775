"""`isoflop validate FILE`: a manifest checked as the operator checks it, and its data."""

from __future__ import annotations

import argparse

from isoflop import api
from isoflop.cli.common import HelpFormatter, Subparsers
from isoflop.sweep.check import runnable_plan


def register(sub: Subparsers) -> None:
    p = sub.add_parser(
        "validate",
        formatter_class=HelpFormatter,
        help="check a ScalingSweep manifest and its data",
        description=command.__doc__,
    )
    p.add_argument("file", help="a ScalingSweep manifest (YAML)")
    p.add_argument(
        "--no-data", action="store_true", help="check the manifest only, not its data source"
    )
    p.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    """Check a manifest, and unless --no-data, that its data exists and fits it."""
    from isoflop.sweep.datacheck import check_data

    sweep = api.load_sweep(args.file)
    planned = runnable_plan(sweep.spec)
    report = None if args.no_data else check_data(sweep.spec, planned)
    print(f"{args.file}: ScalingSweep '{sweep.name}' is valid.")
    if report is not None:
        print(report.text())
    return 0
