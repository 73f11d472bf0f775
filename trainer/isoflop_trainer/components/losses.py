"""The training loss as the loop sees it: read back from the device in batches, averaged over the
ranks, tracked as an EMA and a curve, and watched for NaN and divergence.

Reading the loss every step would drain the GPU's queue each step, so the step's losses stay on
the device until the loop needs a value (a log line, a checkpoint, a stop): then one transfer.
A NaN step's update is applied before it is seen, but the trial then fails at that step and no
checkpoint is written after it.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

from isoflop_trainer.components.checkpoint import LoopState
from isoflop_trainer.components.failures import TrialFailed
from isoflop_trainer.components.runtime import Runtime
from isoflop_trainer.components.telemetry import Telemetry
from isoflop_trainer.config import TrainConfig


class LossWatch:
    def __init__(
        self, cfg: TrainConfig, rt: Runtime, state: LoopState, telemetry: Telemetry | None
    ) -> None:
        self.cfg, self.rt, self.state, self.telemetry = cfg, rt, state, telemetry
        self.pending: list[torch.Tensor] = []  # losses of the steps since the last read-back

    def add(self, loss: torch.Tensor) -> None:
        self.pending.append(loss)

    def settle(self) -> float:
        """Read the pending losses back in one transfer (the loop's only wait on the device) and
        account for them step by step; returns the latest step's loss."""
        losses = torch.stack(self.pending).float()
        self.pending.clear()
        if self.rt.world > 1:
            dist.all_reduce(losses)  # the mean over ranks
            losses /= self.rt.world
        first = self.state.step - len(losses)
        value = math.nan
        for i, value in enumerate(losses.tolist()):
            self.account(first + i, value)
        return value

    def account(self, step: int, value: float) -> None:
        state, cfg, telemetry = self.state, self.cfg, self.telemetry
        if not math.isfinite(value):
            if telemetry is not None:  # the chart's alert on a non-finite loss sees it
                telemetry.set(train_loss=value)
            raise TrialFailed(f"training loss became {value} at step {step}")
        state.loss_ema = value if state.loss_ema is None else 0.9 * state.loss_ema + 0.1 * value
        state.losses.append(value)
        if step >= cfg.warmup_steps:
            state.best_ema = min(state.best_ema, state.loss_ema)
            if state.loss_ema > cfg.divergence_factor * state.best_ema:
                if telemetry is not None:
                    telemetry.set(train_loss=value, train_loss_ema=state.loss_ema)
                raise TrialFailed(
                    f"training diverged at step {step}: loss EMA {state.loss_ema:.4g} is over "
                    f"{cfg.divergence_factor:g}x its best, {state.best_ema:.4g}"
                )
