"""The `isoflop-train` command line: the trainer's side of a trial."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TypeAlias

from isoflop_trainer import __version__
from isoflop_trainer.config import FAMILIES, DiTConfig, TrainConfig


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


def load_config(args: argparse.Namespace) -> TrainConfig:
    if (args.config is None) == (args.config_json is None):
        raise ValueError("give exactly one of --config FILE or --config-json TEXT")
    try:
        text = args.config_json if args.config is None else Path(args.config).read_text()
        data = json.loads(text)
    except OSError as err:
        raise ValueError(f"cannot read {args.config}: {err.strerror or err}") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"the training config is not valid JSON (line {err.lineno})") from None
    for override in args.set or []:
        key, _, value = override.partition("=")
        data[key] = json.loads(value) if value[:1] in '[{0123456789-tfn"' else value
    try:
        return TrainConfig.from_dict(data)
    except TypeError as err:
        raise ValueError(f"invalid training config: {err}") from None


def cmd_train(args: argparse.Namespace) -> int:
    """Train one trial (under torchrun for several processes); exit 0, 1 failed, 143 preempted."""
    from isoflop_trainer.train import train

    result, code = train(load_config(args))
    if result.get("status") != "succeeded":
        print(
            f"isoflop-train: trial {result.get('status')}: {result.get('error')}", file=sys.stderr
        )
    return code


def cmd_prepare(args: argparse.Namespace) -> int:
    """Encode images and captions (or class labels) into training shards; or, from
    procedural://shapes, write shards of the procedural dataset."""
    if args.source.startswith("procedural://"):
        return _prepare_procedural(args)
    from isoflop_trainer.data.prepare import Settings, prepare
    from isoflop_trainer.data.sources import open_source

    if args.vae is None:
        raise ValueError("--vae is required: a diffusers AutoencoderKL path or hub name")
    if args.workers < 0 or args.batch_size < 1:
        raise ValueError("--workers must be 0 or more and --batch-size at least 1")
    settings = Settings(
        vae=args.vae,
        image_size=args.image_size,
        vae_subfolder=args.vae_subfolder,
        text_encoder=args.text_encoder,
        text_encoder_subfolder=args.text_encoder_subfolder,
        tokenizer=args.tokenizer,
        tokenizer_subfolder=args.tokenizer_subfolder,
        max_length=args.max_length,
        shard_size=args.shard_size,
        dtype=args.dtype,
        validation_fraction=args.validation_fraction,
        conditioning=args.conditioning,
    )
    source = open_source(args.source, args.layout, args.caption_key)
    _, summary = prepare(
        source,
        args.output,
        settings,
        workers=args.workers,
        batch_size=args.batch_size,
        device=args.device,
        progress=not args.quiet,
    )
    print(summary.text(args.output))
    return 0


def cmd_check_data(args: argparse.Namespace) -> int:
    """Check that a sweep's shards exist and fit its shapes (the operator runs this as a Job with
    the sweep's own credentials); exit 65 with one sentence when they do not."""
    from isoflop_trainer.components.telemetry import write_result
    from isoflop_trainer.data.store import PERMANENT_EXIT_CODE, check_shards

    c, h, w = args.latent_shape
    try:
        train, val = check_shards(
            args.data, args.validation, (c, h, w), args.text_length, args.text_dim, args.need_vae
        )
    except ValueError as err:
        result: dict[str, object] = {"status": "failed", "error": str(err), "permanent": True}
        write_result(result, None, args.termination_log)
        print(f"isoflop-train: error: {err}", file=sys.stderr)
        return PERMANENT_EXIT_CODE
    result = {
        "status": "succeeded",
        "samples": train.samples,
        "validation_samples": val.samples if val is not None else None,
    }
    write_result(result, None, args.termination_log)
    print(json.dumps(result))
    return 0


def cmd_check_model(args: argparse.Namespace) -> int:
    """Build each rung of a class family on the meta device and measure its parameters and
    training FLOPs per sample (the operator runs this as a Job in the trainer image); prints the
    result as JSON, and exits 65 when the class refuses a rung (its sentence in the result)."""
    from isoflop_trainer.components.telemetry import write_result
    from isoflop_trainer.data.store import PERMANENT_EXIT_CODE
    from isoflop_trainer.families import compact
    from isoflop_trainer.modelcheck import check

    try:
        if args.rungs.lstrip().startswith("{"):  # the JSON itself (a Job's argument)
            text = args.rungs
        else:
            text = Path(args.rungs).read_text() if args.rungs != "-" else sys.stdin.read()
        rungs = json.loads(text)
    except OSError as err:
        raise ValueError(f"cannot read {args.rungs}: {err.strerror or err}") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"the rungs are not valid JSON (line {err.lineno})") from None
    if not isinstance(rungs, dict):
        raise ValueError("the rungs must be a JSON object: rung name -> its model config")
    result = check(rungs)
    refused = {k: v["error"] for k, v in result["rungs"].items() if "error" in v}
    verdict: dict[str, object] = {"status": "failed" if refused else "succeeded", **result}
    write_result(verdict, args.output, args.termination_log, compact(result))
    print(json.dumps(verdict))
    for name, error in refused.items():
        print(f"isoflop-train: rung {name}: {error}", file=sys.stderr)
    return PERMANENT_EXIT_CODE if refused else 0


def _prepare_procedural(args: argparse.Namespace) -> int:
    from isoflop_trainer.data.datasets import TRAIN, VALIDATION, ProceduralShapes, write_shards

    if args.samples is None:
        raise ValueError("procedural shards need --samples")
    split = VALIDATION if args.split == "validation" else TRAIN
    c, h, w = args.latent_shape
    source = ProceduralShapes((c, h, w), args.text_length, args.text_dim, args.seed, split)
    index = write_shards(args.output, source, args.samples, args.shard_size, args.dtype)
    print(f"wrote {len(index['shards'])} shards, {args.samples} samples, to {args.output}")
    return 0


Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="isoflop-train", description=__doc__)
    ap.add_argument("--version", action="version", version=f"isoflop-train {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)
    add_count(sub)
    add_train(sub)
    add_prepare(sub)
    add_check_data(sub)
    add_check_model(sub)
    return ap


def add_count(sub: Subparsers) -> None:
    p = sub.add_parser("count", help="exact parameters and FLOPs per sample of a DiT")
    p.add_argument("--family", choices=FAMILIES, default="in-context", help="the DiT family")
    p.add_argument("--depth", type=int, required=True, help="transformer blocks")
    p.add_argument("--width", type=int, required=True, help="model width (hidden size)")
    p.add_argument("--heads", type=int, default=0, help="default: width / 64")
    p.add_argument("--mlp-ratio", type=float, default=4.0, help="MLP width / model width")
    p.add_argument("--patch-size", type=int, default=2, help="latent patch side")
    p.add_argument(
        "--latent-shape",
        type=int,
        nargs=3,
        default=[4, 32, 32],
        metavar=("C", "H", "W"),
        help="latent channels, height, width",
    )
    p.add_argument("--text-length", type=int, default=77, help="text tokens per caption")
    p.add_argument("--text-dim", type=int, default=768, help="text embedding width")
    p.add_argument(
        "--timestep-conditioning",
        choices=["adaln-zero", "in-context"],
        default="adaln-zero",
        help="adaLN-Zero, or the timestep as a token",
    )
    p.add_argument("--qk-norm", action="store_true", help="RMSNorm on queries and keys")
    p.set_defaults(func=cmd_count)


def add_train(sub: Subparsers) -> None:
    p = sub.add_parser("train", help="train one trial (launched by torchrun)")
    p.add_argument("--config", help="a TrainConfig JSON file")
    p.add_argument("--config-json", help="the TrainConfig as JSON text")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override one setting")
    p.set_defaults(func=cmd_train)


def add_prepare(sub: Subparsers) -> None:
    # one add_argument per option of `prepare`: long because the command has 24 options
    p = sub.add_parser(
        "prepare",
        help="encode images and captions into training shards",
        description=cmd_prepare.__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "source",
        nargs="?",
        default="procedural://shapes",
        help="an image folder (captions in metadata.jsonl or NAME.txt; or a folder per class), "
        "WebDataset .tar shards, a saved datasets dataset or parquet files",
    )
    p.add_argument("--output", required=True, help="folder, file:// or s3:// prefix")
    p.add_argument(
        "--layout",
        choices=["auto", "imagefolder", "classfolder", "webdataset", "hf"],
        default="auto",
        help="how the source is laid out (auto: told apart by its files)",
    )
    p.add_argument("--vae", help="diffusers AutoencoderKL: a local path or hub name")
    p.add_argument("--vae-subfolder", help="the VAE's subfolder in a pipeline repository")
    p.add_argument("--text-encoder", help="CLIP text or T5 encoder: a local path or hub name")
    p.add_argument("--text-encoder-subfolder", help="the text encoder's subfolder")
    p.add_argument("--tokenizer", help="default: the text encoder's path")
    p.add_argument("--tokenizer-subfolder", help="the tokenizer's subfolder")
    p.add_argument("--max-length", type=int, default=77, help="text tokens per caption")
    p.add_argument("--caption-key", help="caption column or key (default: text, caption, ...)")
    p.add_argument(
        "--conditioning",
        choices=["auto", "caption", "class"],
        default="auto",
        help="captions, or class names as captions (auto: captions where there are any)",
    )
    p.add_argument("--image-size", type=int, default=256, help="square side after centre crop")
    p.add_argument(
        "--validation-fraction",
        type=float,
        default=0.0,
        help="held out by a hash of each record's key, written under OUTPUT/validation",
    )
    p.add_argument("--workers", type=int, default=default_workers(), help="decoding processes")
    p.add_argument("--batch-size", type=int, default=32, help="images per encoder call")
    p.add_argument("--device", default="auto", help="auto: cuda when there is a GPU")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--shard-size", type=int, default=1024, help="samples per shard")
    p.add_argument(
        "--dtype", choices=["float16", "float32"], default="float16", help="stored precision"
    )
    p.add_argument("--samples", type=int, help="procedural://shapes only: samples to write")
    p.add_argument(
        "--split",
        choices=["train", "validation"],
        default="train",
        help="procedural://shapes only: which split to write",
    )
    p.add_argument(
        "--latent-shape",
        type=int,
        nargs=3,
        default=[4, 32, 32],
        metavar=("C", "H", "W"),
        help="procedural://shapes only: latent channels, height, width",
    )
    p.add_argument(
        "--text-length", type=int, default=77, help="procedural://shapes only: text tokens"
    )
    p.add_argument("--text-dim", type=int, default=768, help="procedural://shapes only: text width")
    p.add_argument("--seed", type=int, default=0, help="procedural://shapes only: the seed")
    p.set_defaults(func=cmd_prepare)


def add_check_data(sub: Subparsers) -> None:
    p = sub.add_parser(
        "check-data",
        help="check that shards exist and fit a sweep's shapes",
        description=cmd_check_data.__doc__,
    )
    p.add_argument("--data", required=True, help="the shards: folder, file:// or s3:// prefix")
    p.add_argument("--validation", help="default: the held-out split the index names")
    p.add_argument(
        "--latent-shape",
        type=int,
        nargs=3,
        required=True,
        metavar=("C", "H", "W"),
        help="the sweep's latent shape",
    )
    p.add_argument("--text-length", type=int, required=True, help="the sweep's text tokens")
    p.add_argument("--text-dim", type=int, required=True, help="the sweep's text width")
    p.add_argument("--need-vae", action="store_true", help="FID needs the index to name a VAE")
    p.add_argument(
        "--termination-log",
        default="/dev/termination-log",
        help="where the verdict goes as JSON (in a pod: its termination message)",
    )
    p.set_defaults(func=cmd_check_data)


def add_check_model(sub: Subparsers) -> None:
    p = sub.add_parser(
        "check-model",
        help="measure each rung of a class family: parameters and FLOPs per sample",
        description=cmd_check_model.__doc__,
    )
    p.add_argument(
        "rungs",
        help="rung name -> its model config, as JSON: a file, - for stdin, or the JSON itself",
    )
    p.add_argument("--output", help="also write the result to this file")
    p.add_argument(
        "--termination-log",
        default="/dev/termination-log",
        help="where the verdict goes as JSON (in a pod: its termination message)",
    )
    p.set_defaults(func=cmd_check_model)


def default_workers() -> int:
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"isoflop-train: error: {err}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
