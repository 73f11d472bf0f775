"""The `isoflop` command line: validate, plan, crd."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from isoflop import __version__, api, crd
from isoflop.plan import DEFAULT_MFU, H100_BF16_PEAK_FLOPS, Plan, plan


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


def format_plan(p: Plan, mfu: float, peak: float) -> str:
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
        "GPU-h",
    ]
    rows = [
        [
            f"{t.budget:.3g}".replace("e+", "e"),
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
            f"{t.gpu_hours(mfu, peak):.3g}",
        ]
        for t in p.trials
    ]
    out = [table(headers, rows)]
    if p.infeasible:
        out.append(f"\ninfeasible ({len(p.infeasible)}):")
        out += [f"  {i.id} ({si(i.params)} params): {i.reason}" for i in p.infeasible]
    exact = sum(t.flops_exact for t in p.trials)
    hours = sum(t.gpu_hours(mfu, peak) for t in p.trials)
    budgets = len({t.budget for t in p.trials})
    out.append(
        f"\n{len(p.trials)} trials over {budgets} budgets, FLOPs counted as {p.accounting}; "
        f"{exact:.3e} FLOPs in all, about {hours:.3g} GPU-hours at {mfu:.0%} MFU "
        f"of a {peak / 1e12:.0f} TFLOP/s GPU."
    )
    return "\n".join(out)


def cmd_validate(args: argparse.Namespace) -> int:
    sweep = api.load_sweep(args.file)
    print(f"{args.file}: ScalingSweep '{sweep.name}' is valid.")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    if not 0 < args.mfu <= 1:
        raise UsageError(f"--mfu must lie in (0, 1], got {args.mfu}")
    if args.peak_tflops <= 0:
        raise UsageError(f"--peak-tflops must be positive, got {args.peak_tflops}")
    sweep = api.load_sweep(args.file)
    p = plan(sweep.spec)
    peak = args.peak_tflops * 1e12
    if args.json:
        print(json.dumps(p.to_json(args.mfu, peak), indent=2))
    else:
        print(f"ScalingSweep '{sweep.name}' ({sweep.spec.model.family})")
        print(format_plan(p, args.mfu, peak))
    return 0


def cmd_crd(args: argparse.Namespace) -> int:
    path = Path(args.output)
    if args.check:
        current = path.read_text() if path.exists() else ""
        if current != crd.render():
            raise UsageError(f"{path} is out of date with isoflop.api; run `isoflop crd`")
        print(f"{path} is up to date.")
        return 0
    if args.output == "-":
        sys.stdout.write(crd.render())
        return 0
    try:
        crd.write(path)
    except OSError as err:
        raise UsageError(f"cannot write {path}: {err.strerror or err}") from None
    print(f"wrote {path}")
    return 0


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="isoflop", description=__doc__)
    ap.add_argument("--version", action="version", version=f"isoflop {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="check a ScalingSweep manifest")
    p.add_argument("file")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("plan", help="print the isoFLOP grid of a ScalingSweep manifest")
    p.add_argument("file")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--mfu", type=float, default=DEFAULT_MFU, help="MFU for the GPU-hour estimate")
    p.add_argument(
        "--peak-tflops",
        type=float,
        default=H100_BF16_PEAK_FLOPS / 1e12,
        help="GPU peak TFLOP/s for the estimate (default: H100 bf16 dense)",
    )
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("crd", help="write the CustomResourceDefinition generated from the API")
    p.add_argument("--output", "-o", default=str(crd.CRD_PATH), help="path, or - for stdout")
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
    return code


if __name__ == "__main__":
    sys.exit(main())
