"""The `isoflop-train` command line: the trainer's side of a trial."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict

from isoflop_trainer import __version__
from isoflop_trainer.config import FAMILIES, DiTConfig


def cmd_count(args: argparse.Namespace) -> int:
    """Exact parameters and training FLOPs per sample of one DiT configuration."""
    channels, height, width = args.latent_shape
    cfg = DiTConfig(
        family=args.family,
        depth=args.depth,
        width=args.width,
        heads=args.heads or max(1, args.width // 64),
        mlp_ratio=args.mlp_ratio,
        patch_size=args.patch_size,
        latent_channels=channels,
        latent_height=height,
        latent_width=width,
        text_length=args.text_length,
        text_dim=args.text_dim,
        timestep_conditioning=args.timestep_conditioning,
        qk_norm=args.qk_norm,
    )
    params, flops = cfg.params(), cfg.flops_per_sample()
    out = {
        "config": asdict(cfg),
        "params": asdict(params),
        "tokensPerSample": cfg.tokens_per_sample,
        "flopsPerSample": {**asdict(flops), "total": flops.total},
        "flopsPerSample6ND": cfg.flops_per_sample_6nd(),
    }
    print(json.dumps(out, indent=2))
    return 0


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="isoflop-train", description=__doc__)
    ap.add_argument("--version", action="version", version=f"isoflop-train {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("count", help="exact parameters and FLOPs per sample of a DiT")
    p.add_argument("--family", choices=FAMILIES, default="in-context")
    p.add_argument("--depth", type=int, required=True)
    p.add_argument("--width", type=int, required=True)
    p.add_argument("--heads", type=int, default=0, help="default: width / 64")
    p.add_argument("--mlp-ratio", type=float, default=4.0)
    p.add_argument("--patch-size", type=int, default=2)
    p.add_argument(
        "--latent-shape", type=int, nargs=3, default=[4, 32, 32], metavar=("C", "H", "W")
    )
    p.add_argument("--text-length", type=int, default=77)
    p.add_argument("--text-dim", type=int, default=768)
    p.add_argument(
        "--timestep-conditioning", choices=["adaln-zero", "in-context"], default="adaln-zero"
    )
    p.add_argument("--qk-norm", action="store_true")
    p.set_defaults(func=cmd_count)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except ValueError as err:
        print(f"isoflop-train: error: {err}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
