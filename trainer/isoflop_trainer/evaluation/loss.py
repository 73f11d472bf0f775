"""End-of-trial evaluation: fixed-pair validation loss and likelihood (bits/dim); FID: fid.py."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from isoflop_trainer.data.datasets import Dataset
from isoflop_trainer.models.flow import bits_per_dim, flow_loss, log_likelihood

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
