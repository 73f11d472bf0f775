"""Checkpointing: what a trial saves so that a retry, a preempted attempt or a cooldown branch
continues exactly where it left off.

One format for 1 process, DDP and FSDP alike: full (unsharded) state dicts of the model and the
optimizer, the loop's state, the RNG, the loss scaler, the EMA weights and the resolved config,
written atomically to a folder or an S3 prefix (a local rename; a single S3 PUT). A stable run
also keeps a checkpoint at each branch point, from which its cooldown branches start.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.optim.swa_utils import AveragedModel

from isoflop_trainer.components.runtime import Runtime
from isoflop_trainer.config import TrainConfig
from isoflop_trainer.data.datasets import Store

CHECKPOINT = "checkpoint.pt"


def branch_name(step: int) -> str:
    """The checkpoint a stable run keeps at a branch point."""
    return f"branch-{step:09d}.pt"


@dataclass
class LoopState:
    """Everything of the loop that a checkpoint must restore besides model and optimizer."""

    step: int = 0
    samples: int = 0
    loss_ema: float | None = None
    best_ema: float = math.inf
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    # throughput without each process's first logging window, which holds torch.compile's
    # compilation and the warm-up of kernels and allocator (tens of seconds on a GPU)
    steady_seconds: float = 0.0
    steady_samples: int = 0
    # the MLflow run of each trial that trained this checkpoint, by its key (a stable run's
    # segments and branches share checkpoints; each has a run of its own)
    tracking: dict[str, str] = field(default_factory=dict)


class Checkpointer:
    """Atomic checkpoints in a folder or an S3 prefix (a local rename; a single S3 PUT)."""

    def __init__(self, uri: str) -> None:
        self.store = Store(uri)

    def load(self, name: str = CHECKPOINT) -> dict[str, Any] | None:
        if not self.store.exists(name):
            return None
        raw = self.store.read(name)
        loaded: dict[str, Any] = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=False)
        return loaded

    def save(self, payload: dict[str, Any], name: str = CHECKPOINT) -> None:
        buf = io.BytesIO()
        torch.save(payload, buf)
        self.store.write(name, buf.getvalue())


class Checkpointing:
    """Saves and restores one trial's training: model, optimizer, loss scaler, EMA, RNG, loop."""

    def __init__(
        self,
        cfg: TrainConfig,
        rt: Runtime,
        model: torch.nn.Module,
        opt: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
        ema: AveragedModel | None,
    ) -> None:
        self.cfg, self.rt = cfg, rt
        self.model, self.opt, self.scaler, self.ema = model, opt, scaler, ema
        self.store = Checkpointer(cfg.checkpoint) if cfg.checkpoint else None
        # a branch: the step it started from and the samples its stable run trained before it
        self.branched: int | None = None
        self.prefix_samples = 0

    def restore(self) -> LoopState:
        """The trial's own checkpoint, else (a cooldown branch's first attempt) its branch point,
        else a fresh start."""
        saved = self.store.load() if self.store is not None else None
        resumed = saved is not None
        if saved is not None:
            self.branched = saved.get("branched_from")
            self.prefix_samples = saved.get("prefix_samples", 0)
        elif self.cfg.branch_from is not None:
            saved = self.branch_start()
        if saved is None:
            return LoopState()
        load = StateDictOptions(full_state_dict=True)
        set_model_state_dict(self.model, saved["model"], options=load)
        set_optimizer_state_dict(self.model, self.opt, saved["optimizer"], options=load)
        state = LoopState(**saved["state"])
        torch.set_rng_state(saved["rng"])
        if "scaler" in saved:
            self.scaler.load_state_dict(saved["scaler"])
        if self.ema is not None and "ema" in saved:
            self.ema.load_state_dict(saved["ema"])
        if self.rt.main:  # the trial's log says where this attempt starts
            how = "resumed" if resumed else "branched"
            where = self.cfg.checkpoint if resumed else self.cfg.branch_from
            print(
                f"isoflop-train: trial {self.cfg.trial} {how} from step {state.step} of "
                f"{self.cfg.steps} ({where})",
                flush=True,
            )
        return state

    def branch_start(self) -> dict[str, Any]:
        """The stable run's checkpoint at this branch's step, as this trial's own start."""
        assert self.cfg.branch_from is not None
        saved = Checkpointer(self.cfg.branch_from).load(branch_name(self.cfg.branch_step))
        if saved is None:
            raise FileNotFoundError(  # transient: the stable run may still get there
                f"no branch checkpoint at step {self.cfg.branch_step} in {self.cfg.branch_from}: "
                "its stable run has not reached it"
            )
        self.branched, self.prefix_samples = saved["state"]["step"], saved["state"]["samples"]
        # this trial's own steps, time and throughput only; the prefix is the parent's
        saved["state"].update(losses=[], seconds=0.0, steady_seconds=0.0, steady_samples=0)
        return saved

    def save(self, state: LoopState, name: str = CHECKPOINT) -> None:
        if self.store is None:
            return
        # collective under FSDP (every rank gathers), written by rank 0 alone
        full = StateDictOptions(full_state_dict=True, cpu_offload=True)
        weights = get_model_state_dict(self.model, options=full)
        moments = get_optimizer_state_dict(self.model, self.opt, options=full)
        if self.rt.main:
            self.store.save(
                {
                    "model": weights,
                    "optimizer": moments,
                    "state": state.__dict__,
                    "rng": torch.get_rng_state(),
                    "scaler": self.scaler.state_dict(),
                    **({"ema": self.ema.state_dict()} if self.ema is not None else {}),
                    "config": self.cfg.to_dict(),
                    "branched_from": self.branched,
                    "prefix_samples": self.prefix_samples,
                },
                name,
            )
