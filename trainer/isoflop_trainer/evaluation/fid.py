"""FID of a trial: generated latents and validation latents, decoded to images by the dataset's VAE,
through a standard feature network.

Feature networks come from torch-fidelity, the maintained port of the reference FID code:

    inception         Inception-v3 pool features (2048), the TF-ported FID network: FIDs comparable
                      with published ones (given the same reference images and sample count)
    clip-vit-b-32 ... CLIP image features, as the paper's CLIP-FID (any torch-fidelity CLIP name)
    random-conv[:S]   a fixed random conv net on the images: no weights, for smoke tests only
    PATH              your own network (torch.export .pt2 or TorchScript) on uint8 images

Weights are never fetched while training. They come from `weights` (a local path), or from the
torch hub cache where torch-fidelity would have put a download (`$TORCH_HOME/hub/checkpoints`).

Both sides are decoded by the same decoder, so the VAE's own reconstruction error is common to
both and the FID measures the DiT. Without a VAE (procedural data) the first three latent channels
are the image, as the procedural dataset paints them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from isoflop_trainer.data.datasets import Dataset
from isoflop_trainer.models.flow import sample

EVAL_SEED = 20241011
Model = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

INCEPTION = "inception"
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"


class LatentsAsImages(nn.Module):
    """Procedural latents: channels 0-2 are RGB in [-1, 1]."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        rgb = z[:, :3] if z.shape[1] >= 3 else z[:, :1].expand(-1, 3, -1, -1)
        return rgb


class VaeDecoder(nn.Module):
    """A diffusers AutoencoderKL's decoder, undoing prepare's shift and scale."""

    def __init__(self, vae: Any, scaling: float, shift: float) -> None:
        super().__init__()
        self.vae, self.scaling, self.shift = vae, scaling, shift

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.vae.decode(z / self.scaling + self.shift).sample
        return out


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats to 0-255 bytes, as saved images would be."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def load_decoder(name: str | None, dataset: Dataset) -> nn.Module:
    """The VAE named, or the one the dataset's index records, or latents as images."""
    vae = dict((getattr(getattr(dataset, "index", None), "extra", None) or {}).get("vae") or {})
    if name:
        vae["name"], vae["subfolder"] = name, None
    if not vae.get("name"):
        return LatentsAsImages()
    from diffusers import AutoencoderKL

    try:
        model = AutoencoderKL.from_pretrained(vae["name"], subfolder=vae.get("subfolder"))
    except (OSError, ValueError) as err:
        raise FileNotFoundError(f"cannot load the VAE {vae['name']} for FID: {err}") from None
    model.eval().requires_grad_(False)
    scaling = float(vae.get("scaling_factor", model.config.scaling_factor))
    shift = float(vae.get("shift_factor") or getattr(model.config, "shift_factor", None) or 0.0)
    return VaeDecoder(model, scaling, shift)


class RandomConvFeatures(nn.Module):
    """A small fixed, seeded conv net on uint8 images: FIDs comparable within a sweep only."""

    def __init__(self, seed: int = 0, features: int = 64) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.net = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(32, features, 3, stride=2, padding=1),
            nn.GELU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        for p in self.net.parameters():
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(max(p[0].numel(), 1)))
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x.float() / 127.5 - 1.0)
        return out


class _Fidelity(nn.Module):
    """A torch-fidelity feature extractor returning one (n, d) tensor."""

    def __init__(self, extractor: nn.Module) -> None:
        super().__init__()
        self.extractor = extractor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.extractor(x)[0]
        return out


def _cached(file: str) -> str | None:
    """Where torch-fidelity's download of `file` would be, if it is there."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / file
    return str(path) if path.exists() else None


def load_features(spec: str, weights: str | None = None) -> nn.Module:
    """The feature network named by `spec` (see the module docstring), in eval mode."""
    if spec.startswith("random-conv"):
        seed = int(spec.split(":", 1)[1]) if ":" in spec else 0
        return RandomConvFeatures(seed).eval()
    if spec == INCEPTION or spec.startswith("clip-"):
        from torch_fidelity.feature_extractor_clip import MODEL_METADATA, FeatureExtractorCLIP
        from torch_fidelity.feature_extractor_inceptionv3 import (
            URL_INCEPTION_V3,
            FeatureExtractorInceptionV3,
        )

        if spec == INCEPTION:
            file, url = INCEPTION_FILE, URL_INCEPTION_V3
        elif spec in MODEL_METADATA:
            meta = MODEL_METADATA[spec]
            file = f"{spec}-{meta['hash']}.pt"
            url = f"https://openaipublic.azureedge.net/clip/models/{meta['hash']}/{meta['filename']}.pt"
        else:
            known = ", ".join([INCEPTION, *MODEL_METADATA])
            raise ValueError(f"unknown FID feature network {spec!r} (known: {known}, random-conv)")
        path = weights or _cached(file)
        if path is None:
            raise FileNotFoundError(
                f"FID with {spec} needs its weights, and nothing is downloaded while training: "
                f"give a local copy of {url} as the FID weights"
            )
        if not Path(path).exists():
            raise FileNotFoundError(f"the FID weights {path} do not exist")
        if spec == INCEPTION:
            extractor: nn.Module = FeatureExtractorInceptionV3(
                "inception-v3-compat", ["2048"], feature_extractor_weights_path=path
            )
        else:
            extractor = FeatureExtractorCLIP(spec, ["clip"], feature_extractor_weights_path=path)
        return _Fidelity(extractor).eval()
    network = Path(spec)
    if not network.exists():
        raise FileNotFoundError(f"FID feature network {spec} does not exist")
    if network.suffix == ".pt2":
        exported: nn.Module = torch.export.load(str(network)).module()
        return exported
    scripted: nn.Module = torch.jit.load(str(network), map_location="cpu")
    return scripted.eval()


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """FID between two feature sets (n, d), by torch-fidelity's statistics."""
    from torch_fidelity.metric_fid import (
        KEY_METRIC_FID,
        fid_features_to_statistics,
        fid_statistics_to_metric,
    )

    sa = fid_features_to_statistics(torch.from_numpy(np.asarray(a, dtype=np.float64)))
    sb = fid_features_to_statistics(torch.from_numpy(np.asarray(b, dtype=np.float64)))
    return float(fid_statistics_to_metric(sa, sb, verbose=False)[KEY_METRIC_FID])


@torch.no_grad()
def fid(
    model: Model,
    data: Dataset,
    samples: int,
    features: nn.Module,
    decoder: nn.Module,
    steps: int = 25,
    guidance: float = 1.5,
    batch: int = 64,
    device: torch.device | str = "cpu",
) -> float:
    """FID of images generated from the first `samples` validation captions against those samples'
    own images, both decoded by `decoder`."""
    g = torch.Generator().manual_seed(EVAL_SEED + 1)
    features, decoder = features.to(device), decoder.to(device)
    real: list[np.ndarray] = []
    fake: list[np.ndarray] = []
    for lo in range(0, samples, batch):
        b = data.batch(list(range(lo, min(lo + batch, samples))))
        noise = torch.randn(b.latents.shape, generator=g).to(device)
        generated = sample(model, noise, b.text.to(device), steps=steps, guidance=guidance)
        for latents, out in ((b.latents.to(device), real), (generated.float(), fake)):
            images = to_uint8(decoder(latents))
            out.append(features(images).double().cpu().numpy())
    return frechet_distance(np.concatenate(real), np.concatenate(fake))
