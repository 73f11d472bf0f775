"""Where this process trains: its rank in the trial, the world size and its device, from the
environment torchrun sets; the process group joined once (NCCL on GPU, gloo on CPU)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from isoflop_trainer.config import TrainConfig, peak_bf16_flops


@dataclass
class Runtime:
    rank: int
    world: int
    local_rank: int
    device: torch.device
    stepped: bool = False  # a training step completed in this process (failures.permanent)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"


def setup() -> Runtime:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        # gloo for CPU tensors too on GPU: the per-step preemption vote must not wait for the GPU
        backend = "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return Runtime(rank, world, local, device)


def teardown(rt: Runtime) -> None:
    if rt.world > 1 and dist.is_initialized():
        dist.destroy_process_group()


def peak_flops(cfg: TrainConfig, device: torch.device) -> float | None:
    """The peak the MFU is measured against: the config's, else the GPU's bf16 peak."""
    if cfg.peak_flops:
        return cfg.peak_flops
    if device.type == "cuda":
        return peak_bf16_flops(torch.cuda.get_device_name(device))
    return None
