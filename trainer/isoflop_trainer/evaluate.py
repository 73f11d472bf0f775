"""End-of-trial evaluation: fixed-pair validation loss, likelihood (bits/dim), FID."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from scipy import linalg
from torch import nn

from isoflop_trainer.data import Dataset
from isoflop_trainer.flow import bits_per_dim, flow_loss, log_likelihood, sample

EVAL_SEED = 20241011  # the same (t, noise) pairs for every trial of every sweep

Model = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def fixed_pairs(
    n: int, per_sample: int, shape: tuple[int, ...], device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stratified timesteps and noise for each validation sample, identical across trials.

    Sample j gets timesteps (k + u_jk) / K for k < K, so every sample covers the whole path: far
    less variance than one random timestep per sample.
    """
    g = torch.Generator().manual_seed(EVAL_SEED)
    u = torch.rand(n, per_sample, generator=g)
    t = (torch.arange(per_sample).float()[None] + u) / per_sample  # (n, K)
    noise = torch.randn(n, per_sample, *shape, generator=g)
    return t.to(device), noise.to(device)


@torch.no_grad()
def validation_loss_and_error(
    model: Model,
    data: Dataset,
    samples: int,
    per_sample: int = 4,
    batch: int = 64,
    device: torch.device | str = "cpu",
    autocast: torch.dtype | None = None,
) -> tuple[float, float]:
    """Mean flow loss of the first `samples` validation samples at their fixed (t, noise) pairs,
    and its standard error over the samples (each sample's loss averaged over its pairs).

    The error measures the evaluation's own sampling noise. Every trial sees the same samples and
    pairs, so it is a floor on a trial's noise, not the seed-to-seed spread of training.
    """
    ts, noises = fixed_pairs(samples, per_sample, data.latent_shape, device)
    total = 0.0
    each = np.zeros(samples)
    for lo in range(0, samples, batch):
        hi = min(lo + batch, samples)
        b = data.batch(list(range(lo, hi)))
        x0, text = b.latents.to(device), b.text.to(device)
        for k in range(per_sample):
            with torch.autocast(torch.device(device).type, autocast, enabled=autocast is not None):
                err = flow_loss(model, x0, text, ts[lo:hi, k], noises[lo:hi, k], reduce=False)
            total += float(err.sum())
            each[lo:hi] += err.double().cpu().numpy() / per_sample
    error = float(each.std(ddof=1) / math.sqrt(samples)) if samples > 1 else math.nan
    return total / (samples * per_sample), error


def validation_loss(
    model: Model,
    data: Dataset,
    samples: int,
    per_sample: int = 4,
    batch: int = 64,
    device: torch.device | str = "cpu",
    autocast: torch.dtype | None = None,
) -> float:
    """Mean flow loss of the first `samples` validation samples at their fixed (t, noise) pairs."""
    return validation_loss_and_error(model, data, samples, per_sample, batch, device, autocast)[0]


def likelihood_bpd(
    model: Model,
    data: Dataset,
    samples: int,
    steps: int = 32,
    batch: int = 32,
    device: torch.device | str = "cpu",
) -> float:
    """Mean negative log-likelihood in bits per dimension on a validation subset (fp32)."""
    g = torch.Generator(device=device).manual_seed(EVAL_SEED)
    dims = math.prod(data.latent_shape)
    values = []
    for lo in range(0, samples, batch):
        b = data.batch(list(range(lo, min(lo + batch, samples))))
        text = b.text.to(device)

        def velocity(x: torch.Tensor, t: torch.Tensor, text: torch.Tensor = text) -> torch.Tensor:
            return model(x, t, text)

        log_p = log_likelihood(velocity, b.latents.to(device), steps=steps, generator=g)
        values.append(bits_per_dim(log_p, dims))
    return float(torch.cat(values).mean())


# ------------------------------------------------------------------------------------------------
# FID


class RandomConvFeatures(nn.Module):
    """A small fixed, seeded conv net: a stand-in feature extractor for tests and CPU runs.

    Its FID is comparable between trials of one sweep, not with published FIDs; for those, give a
    TorchScript file of CLIP ViT-L/14 or Inception (with your VAE decoder in front for latents).
    """

    def __init__(self, channels: int, seed: int = 0, features: int = 64) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.net = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1),
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
        return self.net(x)


def load_extractor(spec: str, channels: int) -> nn.Module:
    """'random-conv' (or 'random-conv:SEED'), or a feature network from a file: a torch.export
    program (.pt2, preferred) or a TorchScript file (older CLIP and Inception exports)."""
    if spec.startswith("random-conv"):
        seed = int(spec.split(":", 1)[1]) if ":" in spec else 0
        return RandomConvFeatures(channels, seed).eval()
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"FID feature extractor {spec} does not exist")
    if path.suffix == ".pt2":
        exported: nn.Module = torch.export.load(str(path)).module()
        return exported
    scripted: nn.Module = torch.jit.load(str(path), map_location="cpu")
    return scripted.eval()


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """FID between two feature sets (n, d): |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s_a @ s_b)
    if not np.isfinite(covmean).all():  # near-singular: regularise, as the reference code does
        eye = np.eye(s_a.shape[0]) * 1e-6
        covmean = linalg.sqrtm((s_a + eye) @ (s_b + eye))
    covmean = covmean.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * np.trace(covmean))


@torch.no_grad()
def fid(
    model: Model,
    data: Dataset,
    samples: int,
    extractor: nn.Module,
    steps: int = 25,
    guidance: float = 1.5,
    batch: int = 64,
    device: torch.device | str = "cpu",
) -> float:
    """FID of images generated from validation captions against the validation images."""
    g = torch.Generator().manual_seed(EVAL_SEED + 1)
    extractor = extractor.to(device)
    real, fake = [], []
    for lo in range(0, samples, batch):
        b = data.batch(list(range(lo, min(lo + batch, samples))))
        noise = torch.randn(b.latents.shape, generator=g).to(device)
        generated = sample(model, noise, b.text.to(device), steps=steps, guidance=guidance)
        real.append(extractor(b.latents.to(device)).float().cpu().numpy())
        fake.append(extractor(generated.float()).float().cpu().numpy())
    return frechet_distance(np.concatenate(real), np.concatenate(fake))
