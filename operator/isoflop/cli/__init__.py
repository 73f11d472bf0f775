"""The `isoflop` command line: run, confirm, plan, fit, forecast, validate, crd.

One module per command, each with `register(sub)` (its options) and `command(args)` (what it
does); heavy imports stay inside `command`, so `isoflop --help` and the pure core load nothing
of the local runner or the cluster side.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence

from isoflop import __version__
from isoflop.cli import confirm, crd, fit, forecast, plan, run, validate
from isoflop.cli.common import HelpFormatter, UsageError

COMMANDS = (
    run,
    confirm,
    forecast,
    validate,
    plan,
    fit,
    crd,
)  # in the order `isoflop --help` lists them


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="isoflop", description=__doc__.split("\n")[0],
                                 formatter_class=HelpFormatter)  # fmt: skip
    ap.add_argument("--version", action="version", version=f"isoflop {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)
    for module in COMMANDS:
        module.register(sub)
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
