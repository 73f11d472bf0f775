"""Tiny random encoders and small image-caption datasets in every layout `prepare` reads.

Nothing is downloaded: the VAE, text encoder, tokenizer and FID feature networks are built from
configs here with random weights and saved where the product expects a user's real ones.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np

WORDS = ["red", "green", "blue", "circle", "square", "left", "right", "top", "bottom", "big"]
COLORS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (40, 60, 230)}


def image_bytes(i: int, size: int = 24, fmt: str = "PNG") -> tuple[bytes, str]:
    """A small picture of a coloured square or circle on grey, and the caption that says so."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(i)
    color = list(COLORS)[i % 3]
    shape = ["circle", "square"][(i // 3) % 2]
    side = ["left", "right"][(i // 6) % 2]
    # odd sizes and aspect ratios: prepare resizes and centre-crops them all to one square
    w, h = size + int(rng.integers(0, 9)), size + int(rng.integers(0, 5))
    img = Image.new("RGB", (w, h), (128, 128, 128))
    draw = ImageDraw.Draw(img)
    x0 = 2 if side == "left" else w // 2
    box = (x0, h // 4, x0 + w // 3, h // 4 + w // 3)
    (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=COLORS[color])
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue(), f"{color} {shape} {side}"


def write_imagefolder(root: Path, n: int = 64, sidecar: bool = False) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        data, caption = image_bytes(i)
        (root / f"img{i:03d}.png").write_bytes(data)
        if sidecar:
            (root / f"img{i:03d}.txt").write_text(caption)
        rows.append({"file_name": f"img{i:03d}.png", "text": caption})
    if not sidecar:
        (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def write_classfolder(root: Path, n: int = 64) -> Path:
    for i in range(n):
        data, caption = image_bytes(i)
        folder = root / caption.split()[0]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"img{i:03d}.png").write_bytes(data)
    return root


def write_webdataset(root: Path, n: int = 64, per_tar: int = 20) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for t, lo in enumerate(range(0, n, per_tar)):
        with tarfile.open(root / f"data-{t:04d}.tar", "w") as tar:
            for i in range(lo, min(lo + per_tar, n)):
                data, caption = image_bytes(i, fmt="JPEG")
                for ext, payload in (("jpg", data), ("txt", caption.encode())):
                    info = tarfile.TarInfo(f"{i:06d}.{ext}")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
    return root


def hf_dataset(n: int = 64) -> Any:
    import datasets

    images, captions = zip(*(image_bytes(i) for i in range(n)), strict=True)
    features = datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")})
    return datasets.Dataset.from_dict(
        {"image": [{"bytes": b, "path": None} for b in images], "text": list(captions)},
        features=features,
    )


def write_hf_disk(root: Path, n: int = 64) -> Path:
    hf_dataset(n).save_to_disk(str(root))
    return root


def write_parquet(root: Path, n: int = 64) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    hf_dataset(n).to_parquet(str(root / "train-00000.parquet"))
    return root


# ------------------------------------------------------------------------------------------------
# tiny random models, saved the way real ones are


def write_vae(path: Path, latent_channels: int = 4, seed: int = 0) -> Path:
    """A diffusers AutoencoderKL with 2x downsampling and random weights."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=4,
        sample_size=16,
        scaling_factor=0.5,
        shift_factor=0.1,
    )
    vae.save_pretrained(str(path))
    return path


def write_text_encoder(path: Path, hidden: int = 32, seed: int = 0, kind: str = "clip") -> Path:
    """A CLIP text model (or a T5 encoder) and a word-level tokenizer, random, in one folder."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        PreTrainedTokenizerFast,
        T5Config,
        T5EncoderModel,
    )

    vocab = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]")
    fast.save_pretrained(str(path))
    torch.manual_seed(seed)
    if kind == "t5":
        t5 = T5Config(
            vocab_size=len(vocab),
            d_model=hidden,
            d_kv=8,
            d_ff=2 * hidden,
            num_layers=1,
            num_heads=2,
            pad_token_id=0,
            decoder_start_token_id=0,
        )
        T5EncoderModel(t5).save_pretrained(str(path))
        return path
    config = CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=16,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=1,
    )
    CLIPTextModel(config).save_pretrained(str(path))
    return path


def write_inception(path: Path, seed: int = 0) -> Path:
    """torch-fidelity's Inception-v3 with random weights, saved where real weights would go."""
    import torch
    from torch import nn
    from torch_fidelity import feature_extractor_inceptionv3 as fe

    torch.manual_seed(seed)
    # its constructor loads weights; hand it none, keep the random initialisation, save that
    with (
        mock.patch.object(fe, "load_state_dict_from_url", return_value={}),
        mock.patch.object(nn.Module, "load_state_dict", return_value=None),
    ):
        model = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    torch.save(model.state_dict(), path)
    return path


def write_clip(path: Path, seed: int = 0) -> Path:
    """A tiny CLIP ViT image tower (1 layer, 64 wide, 32 px) as a TorchScript archive, the format
    of OpenAI's CLIP files that torch-fidelity loads."""
    import torch
    from torch import nn
    from torch_fidelity.feature_extractor_clip import CLIPVisual

    torch.manual_seed(seed)
    tower = CLIPVisual(
        embed_dim=16, image_resolution=32, vision_layers=1, vision_width=64, vision_patch_size=16
    )

    class Archive(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.visual = tower.visual
            self.text_projection = nn.Parameter(torch.zeros(8, 16))  # sizes the embedding

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.visual(x)
            return out

    traced = torch.jit.trace(Archive().eval(), torch.randn(1, 3, 32, 32))
    torch.jit.save(traced, str(path))
    return path
