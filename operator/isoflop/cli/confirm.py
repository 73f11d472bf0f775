"""`isoflop confirm RUN_DIR --budget C`: add a confirmation run to a finished local run.

The run's grid is not trained again: its trials are finished in the run directory, so the run
resumes straight to its final fit, predicts the loss of the model its laws call optimal at C
(written to state.json before it starts), trains that model and reports the verdict. The same as
adding `confirm: [C]` to the manifest and running `isoflop run` on the directory again.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from isoflop import api
from isoflop.cli import run
from isoflop.cli.common import HelpFormatter, Subparsers, UsageError


def register(sub: Subparsers) -> None:
    p = sub.add_parser(
        "confirm",
        formatter_class=HelpFormatter,
        help="train the predicted optimum of a finished local run at a larger budget",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run directory of `isoflop run`")
    p.add_argument(
        "--budget",
        type=float,
        action="append",
        required=True,
        metavar="C",
        help="a budget (FLOPs) above the grid's largest to confirm at; repeat for more",
    )
    run.add_backend_options(p)
    p.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    directory = Path(args.run_dir)
    manifest = directory / "sweep.yaml"
    if not manifest.is_file():
        raise UsageError(
            f"{directory} holds no sweep.yaml (not a run directory, or one from before isoflop "
            "kept its manifest): add `confirm: [C]` to the manifest and run `isoflop run FILE "
            f"--run-dir {directory}` again; its finished trials are not trained again"
        )
    sweep = api.load_sweep(manifest)
    obj = sweep.to_wire()
    obj["spec"]["confirm"] = sorted({*sweep.spec.confirm, *args.budget})
    sweep = api.parse_sweep(obj)  # a budget inside the grid: the spec's own sentence
    return run.execute(args, sweep, directory)
