"""Images per second through `isoflop-train prepare`, against decoding alone in the same run.

A folder of JPEGs with captions (imagefolder layout, 320x240 like web images) is prepared to shards
with randomly initialised encoders of two sizes, built from configs so nothing is downloaded:

    tiny   a 2-level VAE (8/16 channels) and a 1-layer CLIP text model: the pipeline's own cost
           (reading, decoding, resizing, workers, shard writing)
    sd     Stable Diffusion's AutoencoderKL architecture (128-512 channels, 8x downsampling) and
           CLIP ViT-L/14's text model (12 layers, 768 wide, 77 tokens): what a real run costs

The baseline is `load_image` (decode, orient, resize, crop) of the same files in one process.

    python benchmarks/bench_prepare.py                       # CPU: tiny at 64 px, sd at 256 px
    python benchmarks/bench_prepare.py --device cuda --images 2048 --sd-images 2048   # a GPU
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from isoflop_trainer.data.prepare import Settings, prepare
from isoflop_trainer.data.sources import load_image, open_source


def write_images(root: Path, n: int, width: int = 320, height: int = 240) -> Path:
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    rows = []
    rng = np.random.default_rng(0)
    for i in range(n):
        # smooth random fields compress like photographs, unlike white noise
        small = rng.integers(0, 256, size=(height // 16, width // 16, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=90)
        (root / f"{i:06d}.jpg").write_bytes(buf.getvalue())
        rows.append({"file_name": f"{i:06d}.jpg", "text": f"a photograph number {i} of a scene"})
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def encoders(kind: str, root: Path) -> tuple[str, str]:
    from diffusers import AutoencoderKL
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast

    torch.manual_seed(0)
    if kind == "sd":
        vae = AutoencoderKL(
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(128, 256, 512, 512),
            layers_per_block=2,
            latent_channels=4,
            scaling_factor=0.18215,
        )
        text = CLIPTextConfig(
            vocab_size=49408,
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            max_position_embeddings=77,
        )
    else:
        vae = AutoencoderKL(
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2,
            block_out_channels=(8, 16),
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=4,
        )
        text = CLIPTextConfig(
            vocab_size=1000,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=77,
        )
    vae.save_pretrained(str(root / "vae"))
    words = ["a", "photograph", "number", "of", "scene", *[str(i) for i in range(900)]]
    vocab = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]")
    fast.save_pretrained(str(root / "text"))
    CLIPTextModel(text).save_pretrained(str(root / "text"))
    return str(root / "vae"), str(root / "text")


def decode_rate(folder: Path, size: int) -> float:
    files = sorted(folder.glob("*.jpg"))
    start = time.perf_counter()
    for f in files:
        load_image(f.read_bytes(), size)
    return len(files) / (time.perf_counter() - start)


def prepare_rate(
    folder: Path, out: Path, vae: str, text: str, size: int, workers: int, device: str
) -> tuple[float, int]:
    settings = Settings(vae=vae, text_encoder=text, image_size=size, shard_size=256)
    source = open_source(str(folder))
    start = time.perf_counter()
    _, summary = prepare(
        source, str(out), settings, workers=workers, batch_size=32, device=device, progress=False
    )
    seconds = time.perf_counter() - start
    return summary.records / seconds, summary.train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", type=int, default=512, help="images for the tiny encoders")
    ap.add_argument("--sd-images", type=int, default=64, help="images for the SD-sized encoders")
    ap.add_argument("--tiny-size", type=int, default=64)
    ap.add_argument("--sd-size", type=int, default=256)
    ap.add_argument("--workers", type=int, nargs="*", default=[0, 1, 2])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    machine = torch.cuda.get_device_name() if args.device == "cuda" else platform.machine()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder = write_images(root / "images", max(args.images, args.sd_images))
        for kind, n, size in (
            ("tiny", args.images, args.tiny_size),
            ("sd", args.sd_images, args.sd_size),
        ):
            subset = root / f"images-{kind}"
            subset.mkdir()
            for f in sorted(folder.glob("*.jpg"))[:n]:
                (subset / f.name).symlink_to(f)
            meta = (folder / "metadata.jsonl").read_text().splitlines()[:n]
            (subset / "metadata.jsonl").write_text("\n".join(meta) + "\n")
            baseline = decode_rate(subset, size)
            vae, text = encoders(kind, root / f"models-{kind}")
            for workers in args.workers if kind == "tiny" else [max(args.workers)]:
                rate, samples = prepare_rate(
                    subset, root / f"out-{kind}-{workers}", vae, text, size, workers, args.device
                )
                row: dict[str, Any] = {
                    "bench": "prepare",
                    "device": machine,
                    "encoders": kind,
                    "images": n,
                    "image_size": size,
                    "workers": workers,
                    "images_per_second": round(rate, 2),
                    "decode_only_images_per_second": round(baseline, 2),
                    "ratio_vs_decode_only": round(rate / baseline, 4),
                    "samples": samples,
                    "torch": torch.__version__,
                    "threads": torch.get_num_threads(),
                }
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
