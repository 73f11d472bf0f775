"""`isoflop run FILE`: a sweep on this machine (CPU or local GPUs), resumable after any stop."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from isoflop import api
from isoflop.cli.common import LAW_HELP, HelpFormatter, Subparsers, UsageError
from isoflop.sweep.check import runnable_plan

if TYPE_CHECKING:
    from isoflop.local.runner import Run


def register(sub: Subparsers) -> None:
    p = sub.add_parser(
        "run",
        formatter_class=HelpFormatter,
        help="run a sweep on this machine (CPU or local GPUs), resumably",
    )
    p.add_argument("file", help="a ScalingSweep manifest (YAML)")
    p.add_argument("--run-dir", help="where state, logs and results go (default: runs/NAME)")
    add_backend_options(p)
    p.set_defaults(func=command)


def add_backend_options(p: argparse.ArgumentParser) -> None:
    """Where the trials train and how the run shows itself (`isoflop run` and `confirm`)."""
    p.add_argument("--simulate", action="store_true", help="draw losses from a known law instead")
    p.add_argument("--law", help=LAW_HELP)
    p.add_argument("--noise", type=float, default=0.005, help="simulated multiplicative noise")
    p.add_argument(
        "--rates",
        help="how the simulated loss depends on the learning rate: 'step' (Step Law's optimum "
        "1.79 N^-0.713 D^0.307, a basin of depth 0.2 per squared decade) or "
        "coefficient,alpha,beta,depth; default: it does not",
    )
    p.add_argument(
        "--batches",
        help="how the simulated loss depends on the global batch: 'step' (Step Law's optimum "
        "0.58 D^0.571, a basin of depth 0.1 per squared decade) or coefficient,beta,depth; "
        "default: it does not",
    )
    p.add_argument("--parallelism", type=int, help="trials at once (default: the spec's)")
    p.add_argument(
        "--gpus",
        help="GPUs to use, e.g. 0,1,2,3, or none (default: CUDA_VISIBLE_DEVICES, else all); each "
        "trial gets spec.resources.gpusPerNode of them, never shared",
    )
    p.add_argument("--plain", action="store_true", help="one line per event, no live display")


def command(args: argparse.Namespace) -> int:
    sweep = load(args)
    return execute(args, sweep, Path(args.run_dir or Path("runs") / sweep.name))


def execute(args: argparse.Namespace, sweep: api.ScalingSweep, directory: Path) -> int:
    """Run (or resume) the sweep in its directory until it ends or is stopped."""
    from isoflop.local.runner import Display

    sweep = checked(args, sweep, directory)
    run = open_run(args, sweep, directory)
    try:
        decision = run.run(Display(live=False if args.plain else None))
    except KeyboardInterrupt:
        done = sum(s.phase == "Succeeded" for s in run.state.trials.values())
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
    if run.state.fit_text is not None:
        print(run.state.fit_text)
        print()
    for c in run.state.confirmations:
        print(f"isoflop: confirmation {c.trial}: {c.message or c.phase}")
    if run.tracking is not None:
        tracked = run.tracking.status()
        print(f"isoflop: MLflow experiment {tracked.experiment!r}: {tracked.experiment_url or '-'}")
        for line in tracked.not_logged:
            print(f"isoflop: not logged in MLflow: {line}")
    print(f"isoflop: {decision.phase}: {decision.message}. Report: {directory / 'report.md'}")
    return 0 if decision.phase == "Succeeded" else 1


def load(args: argparse.Namespace) -> api.ScalingSweep:
    """The manifest, with --parallelism."""
    sweep = api.load_sweep(args.file)
    if args.parallelism is not None:
        if args.parallelism < 1:
            raise UsageError(f"--parallelism must be at least 1, got {args.parallelism}")
        spec = sweep.spec.model_copy(update={"parallelism": args.parallelism})
        sweep = sweep.model_copy(update={"spec": spec})
    return sweep


def checked(args: argparse.Namespace, sweep: api.ScalingSweep, directory: Path) -> api.ScalingSweep:
    """The sweep as it runs: a class family's rungs measured (once per run directory), its plan
    checked, and a real run's data checked, before anything starts."""
    from isoflop.local.modelcheck import CACHE, model_checked

    say = partial(print, "isoflop:", flush=True)
    spec = model_checked(sweep.spec, directory / CACHE, say)
    sweep = sweep.model_copy(update={"spec": spec})
    planned = runnable_plan(sweep.spec)
    if not args.simulate:
        from isoflop.sweep.datacheck import check_data

        report = check_data(sweep.spec, planned)
        if report.train is not None:
            say(report.text())
    return sweep


def open_run(args: argparse.Namespace, sweep: api.ScalingSweep, directory: Path) -> Run:
    """The run in its directory (locked), on the backend the options ask for; says so."""
    from isoflop.local.backends import make_backend
    from isoflop.local.devices import DeviceError, parse_gpus
    from isoflop.local.runner import Run, RunError
    from isoflop.sweep.forecast import BatchBasin, Law, RateBasin

    try:
        law = Law.parse(args.law) if args.law else Law()
        if args.rates:
            law = replace(law, rates=RateBasin.parse(args.rates))
        if args.batches:
            law = replace(law, batches=BatchBasin.parse(args.batches))
    except ValueError as err:
        raise UsageError(str(err)) from None
    kind = "simulated" if args.simulate else "local"
    try:
        gpus = None if args.gpus is None else parse_gpus(args.gpus)
        backend = make_backend(kind, sweep.spec, law, args.noise, gpus)
        run = Run(sweep, directory, backend)
    except (DeviceError, RunError) as err:
        raise UsageError(str(err)) from None
    done = sum(s.phase == "Succeeded" for s in run.state.trials.values())
    resumed = f", resuming with {done} finished" if run.state.trials else ""
    print(
        f"isoflop: sweep '{sweep.name}': {len(run.plan.trials)} trials ({kind}), "
        f"run directory {directory}{resumed}",
        flush=True,
    )
    for line in [*run.notices, *run.recovered]:
        print(f"isoflop: {line}", flush=True)
    return run
