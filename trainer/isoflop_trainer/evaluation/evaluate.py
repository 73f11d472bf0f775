"""A trained trial's evaluation: validation loss at fixed pairs, bits/dim and FID, as its config
asks (on rank 0; on every rank under FSDP, whose model is sharded)."""

from __future__ import annotations

import math
from typing import Any

import torch

from isoflop_trainer.components.failures import DataError
from isoflop_trainer.components.runtime import Runtime
from isoflop_trainer.config import TrainConfig
from isoflop_trainer.data.datasets import VALIDATION, open_trial_data
from isoflop_trainer.evaluation.fid import fid, load_decoder, load_features
from isoflop_trainer.evaluation.loss import likelihood_bpd, validation_loss_and_error


def evaluate(
    cfg: TrainConfig, model: Any, rt: Runtime, autocast: torch.dtype | None
) -> dict[str, float]:
    """Validation loss (fixed pairs), bits/dim and FID on rank 0 (every rank under FSDP)."""
    if not rt.main and not cfg.fsdp:
        return {}
    val = open_trial_data(cfg, VALIDATION)
    model.eval()
    out: dict[str, float] = {}
    if cfg.eval_samples:
        out["eval_loss"], se = validation_loss_and_error(
            model,
            val,
            min(cfg.eval_samples, len(val)),  # a small held-out split: each sample once
            cfg.eval_timesteps,
            device=rt.device,
            autocast=autocast,
        )
        if math.isfinite(se):
            out["eval_loss_se"] = se
    if cfg.likelihood_samples:
        out["eval_bpd"] = likelihood_bpd(
            model,
            val,
            min(cfg.likelihood_samples, len(val)),
            steps=cfg.likelihood_steps,
            device=rt.device,
        )
    if cfg.fid_samples:
        try:
            features, decoder = (
                load_features(cfg.fid_features, cfg.fid_weights),
                load_decoder(cfg.vae, val),
            )
        except (FileNotFoundError, ValueError) as err:
            raise DataError(str(err)) from None
        out["eval_fid"] = fid(
            model,
            val,
            min(cfg.fid_samples, len(val)),
            features,
            decoder,
            steps=cfg.fid_steps,
            guidance=cfg.fid_guidance,
            device=rt.device,
        )
    return out
