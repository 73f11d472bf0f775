"""`isoflop validate FILE`: a manifest checked as the operator checks it, and its data."""

from __future__ import annotations

import argparse
import sys

from isoflop import api
from isoflop.api.kubeyaml import Document
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
    p.add_argument(
        "--server",
        action="store_true",
        help="also ask the API server of your kubeconfig (dryRun=All, nothing is created) "
        "whether it takes the sweep, and each distinct child the operator will make of it: a "
        "trial's Job, pod and Service, the check and confirmation Jobs",
    )
    p.add_argument("--context", help="with --server: the kubeconfig context (default: current)")
    p.add_argument(
        "--namespace", "-n",
        help="with --server: where (default: the manifest's, else the context's, else default)",
    )  # fmt: skip
    p.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    """Check a manifest, and unless --no-data, that its data exists and fits it. A file of
    several documents, or a v1 List, is read as kubectl applies it: each ScalingSweep is checked
    on its own. What the API server would drop on create (a field set to null, a status) is
    dropped here too, with a note."""
    docs = api.read_manifests(args.file)
    sweeps = [d for d in docs if isinstance(d.obj, dict) and d.obj.get("kind") == api.KIND]
    if not sweeps:
        api.load_sweep(args.file)  # raises: the one sentence for a file with no sweep of ours
    if len(docs) == 1:
        check(args, str(args.file), sweeps[0])  # one object: its refusal is the command's error
        return 0
    invalid = 0
    for d in docs:
        where = f"{args.file}: {d.where}"
        if d not in sweeps:
            kind = d.obj.get("kind") if isinstance(d.obj, dict) else None
            print(f"{where}: {kind or 'an object'} is not a ScalingSweep: not checked")
            continue
        try:
            check(args, where, d)
        except ValueError as err:
            print(f"{where}: invalid: {err}", file=sys.stderr)
            invalid += 1
    if invalid:
        print(f"isoflop: error: {invalid} of {len(sweeps)} ScalingSweeps invalid", file=sys.stderr)
    return 2 if invalid else 0


def check(args: argparse.Namespace, where: str, doc: Document) -> None:
    """One sweep of the file: its notes, then valid (and its data's report) or a ValueError."""
    from isoflop.local.modelcheck import model_checked
    from isoflop.sweep.datacheck import check_data

    for note in doc.dropped:
        print(f"{where}: note: dropped {note}")
    sweep = api.parse_sweep(doc.obj)
    spec = model_checked(sweep.spec)
    planned = runnable_plan(spec)
    report = None if args.no_data else check_data(spec, planned)
    if getattr(args, "server", False):
        from isoflop.cli.server import server_check

        print(server_check(doc.obj, sweep.model_copy(update={"spec": spec}), planned, args))
    print(f"{where}: ScalingSweep '{sweep.name}' is valid.")
    if report is not None:
        print(report.text())
