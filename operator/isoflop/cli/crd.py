"""`isoflop crd`: write (or --check) the CustomResourceDefinition generated from the API."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from isoflop.api import crd
from isoflop.cli.common import HelpFormatter, Subparsers, UsageError


def register(sub: Subparsers) -> None:
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
    p.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
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
