"""One optimizer step: the global batch's random draws, its micro-batches, precision, the update.

Determinism across world sizes: every random draw of a step (noise, timesteps, caption dropout) is
made for the whole global batch from a generator seeded by (seed, step), and each rank takes its
slice; sample i of the data is a pure function of i. So 1 process and N processes at the same
global batch see the same samples with the same noise, and a resumed run continues exactly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from isoflop_trainer.components.runtime import Runtime
from isoflop_trainer.config import TrainConfig
from isoflop_trainer.data.datasets import Batch, Dataset
from isoflop_trainer.models.flow import drop_text, flow_loss, keep_captions, sample_timesteps


def step_seed(seed: int, step: int) -> int:
    """The seed of a step's noise, timesteps and caption dropout: a pure function of (seed, step),
    within the 64 bits a torch generator takes (the same as before for seeds below 1.8e13)."""
    return (seed * 1_000_003 + step) % 2**64


def chunks(per_rank: int, micro: int) -> list[tuple[int, int]]:
    """Split a rank's share of the global batch into micro-batches (offsets within the share)."""
    return [(lo, min(lo + micro, per_rank)) for lo in range(0, per_rank, micro)]


class RankBatches(IterableDataset[tuple[int, int, Batch]]):
    """This rank's micro-batches from a starting step on; loader workers take turns."""

    def __init__(self, data: Dataset, cfg: TrainConfig, rt: Runtime, start: int) -> None:
        self.data, self.start, self.steps = data, start, cfg.steps
        self.batch_size = cfg.global_batch_size
        self.per_rank = cfg.global_batch_size // rt.world
        self.offset = rt.rank * self.per_rank
        self.parts = chunks(self.per_rank, cfg.micro_batch_size or self.per_rank)

    def __iter__(self) -> Iterator[tuple[int, int, Batch]]:
        info = get_worker_info()
        workers, me = (info.num_workers, info.id) if info else (1, 0)
        item = 0
        for step in range(self.start, self.steps):
            base = step * self.batch_size + self.offset
            for k, (lo, hi) in enumerate(self.parts):
                if item % workers == me:
                    yield step, k, self.data.batch(list(range(base + lo, base + hi)))
                item += 1


def _worker_init(_: int) -> None:
    info = get_worker_info()
    if info is not None:
        reset = getattr(getattr(info.dataset, "data", None), "reset", None)
        if reset is not None:
            reset()  # no S3 client or cache shared with the parent process


def loader(data: Dataset, cfg: TrainConfig, rt: Runtime, start: int) -> Iterator[Any]:
    """This rank's micro-batches from `start` on, read ahead by the loader's workers."""
    return iter(
        DataLoader(
            RankBatches(data, cfg, rt, start),
            batch_size=None,
            num_workers=cfg.num_workers,
            worker_init_fn=_worker_init,
            persistent_workers=False,
            pin_memory=rt.cuda,  # page-locked batches: the copies to the GPU are truly asynchronous
        )
    )


class Precision:
    """Mixed precision on GPU (bf16 or fp16 autocast; fp16 with loss scaling, or small gradients
    underflow to zero); fp32 throughout on CPU."""

    def __init__(self, cfg: TrainConfig, rt: Runtime) -> None:
        dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16}
        self.device_type = rt.device.type
        self.autocast: torch.dtype | None = dtypes.get(cfg.precision) if rt.cuda else None
        self.scaler = torch.amp.GradScaler(
            rt.device.type, enabled=rt.cuda and cfg.precision == "fp16"
        )

    def forward(self) -> contextlib.AbstractContextManager[Any]:
        return torch.autocast(self.device_type, self.autocast, enabled=self.autocast is not None)


class Step:
    """One optimizer step over this rank's micro-batches; returns the step's loss, left on the
    device (reading it back would drain the GPU's queue every step: see losses.LossWatch)."""

    def __init__(
        self,
        cfg: TrainConfig,
        rt: Runtime,
        model: torch.nn.Module,
        forward: Any,  # the model as called: compiled and DDP-wrapped where they apply
        ddp: DistributedDataParallel | None,
        opt: torch.optim.Optimizer,
        precision: Precision,
        ema: AveragedModel | None,
        batches: Iterator[Any],
    ) -> None:
        self.cfg, self.rt, self.model, self.forward, self.ddp = cfg, rt, model, forward, ddp
        self.opt, self.precision, self.ema, self.batches = opt, precision, ema, batches
        self.per_rank = cfg.global_batch_size // rt.world
        self.parts = chunks(self.per_rank, cfg.micro_batch_size or self.per_rank)
        self.shape = (cfg.model.latent_channels, cfg.model.latent_height, cfg.model.latent_width)
        self.lr = cfg.learning_rate  # the latest step's

    def __call__(self, step: int) -> torch.Tensor:
        cfg, rt, B = self.cfg, self.rt, self.cfg.global_batch_size
        lr = cfg.learning_rate * cfg.lr_multiplier(step)
        for group in self.opt.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)  # muP's per-layer multipliers
        g = torch.Generator(device=rt.device).manual_seed(step_seed(cfg.seed, step))
        noise_all = torch.randn((B, *self.shape), generator=g, device=rt.device)
        t_all = sample_timesteps(B, cfg.timestep_sampling, g, str(rt.device))
        keep_all = keep_captions(B, cfg.text_dropout, g, str(rt.device))
        self.opt.zero_grad(set_to_none=True)
        scaler = self.precision.scaler
        step_loss = torch.zeros((), device=rt.device)
        for k, (lo, hi) in enumerate(self.parts):
            got_step, got_k, batch = next(self.batches)
            assert (got_step, got_k) == (step, k), "data loader out of order"
            rows = slice(rt.rank * self.per_rank + lo, rt.rank * self.per_rank + hi)
            x0 = batch.latents.to(rt.device, non_blocking=True)
            text = drop_text(batch.text.to(rt.device, non_blocking=True), keep_all[rows])
            weight = (hi - lo) / self.per_rank
            last = k == len(self.parts) - 1
            # DDP reduces gradients once, after the last micro-batch
            sync = (
                self.ddp.no_sync()
                if self.ddp is not None and not last
                else contextlib.nullcontext()
            )
            with sync:
                with self.precision.forward():
                    loss = flow_loss(self.forward, x0, text, t_all[rows], noise_all[rows])
                scaler.scale(loss * weight).backward()  # outside autocast, as torch advises
            step_loss += loss.detach() * weight
        if cfg.grad_clip > 0:
            scaler.unscale_(self.opt)  # clip the true gradients (a no-op unless fp16)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        scaler.step(self.opt)  # fp16: skipped when the scaled gradients overflowed
        scaler.update()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        rt.stepped = True
        self.lr = lr
        return step_loss
