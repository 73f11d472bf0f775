"""One trial's training, as a Trainer of named components (in the spirit of torchtitan's):

    components.runtime      this process's rank, world and device (torchrun; NCCL or gloo)
    components.step         one optimizer step: the batch's random draws, micro-batches, precision
    components.checkpoint   save and restore (resume, preemption, cooldown branches)
    components.losses       the loss read back in batches: EMA, curve, NaN and divergence
    components.throughput   samples/s over logging windows, warm-up left out
    components.telemetry    Prometheus gauges on rank 0, the result file
    components.tracking     the trial's MLflow run on rank 0 (continued on resume), never waited on
    components.preemption   SIGTERM: stop at the next step on every rank, checkpoint, exit 143
    evaluation.evaluate     validation loss, bits/dim, FID once training ends

The Trainer builds them from the trial's TrainConfig (`__init__`), runs the loop (`fit`) and
says what the trial measured (`result`). `isoflop_trainer.train.train` wraps it: every failure
becomes a result, classed for retries (components.failures).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from isoflop_trainer.components.checkpoint import CHECKPOINT, Checkpointing, branch_name
from isoflop_trainer.components.compile_cache import (
    CompileCache,
    cache_name,
    inductor_cache_misses,
)
from isoflop_trainer.components.failures import PREEMPTED_EXIT_CODE, TrialFailed
from isoflop_trainer.components.losses import LossWatch
from isoflop_trainer.components.preemption import Preemption
from isoflop_trainer.components.runtime import Runtime, peak_flops
from isoflop_trainer.components.step import Precision, Step, loader
from isoflop_trainer.components.telemetry import Telemetry
from isoflop_trainer.components.throughput import Throughput
from isoflop_trainer.components.tracking import Tracker, trial_params
from isoflop_trainer.config import TrainConfig
from isoflop_trainer.data.datasets import TRAIN, atomic_write, open_trial_data
from isoflop_trainer.evaluation.evaluate import evaluate
from isoflop_trainer.models import adapters, mup


class Trainer:
    def __init__(
        self,
        cfg: TrainConfig,
        rt: Runtime,
        telemetry: Telemetry | None,
        tracker: Tracker | None = None,
    ) -> None:
        if cfg.global_batch_size % rt.world:
            raise TrialFailed(
                f"global batch {cfg.global_batch_size} does not split evenly over {rt.world} "
                "processes"
            )
        self.cfg, self.rt, self.telemetry, self.tracker = cfg, rt, telemetry, tracker
        self.precision = Precision(cfg, rt)
        self.model = self.build_model()
        self.ddp, forward = self.parallelize()
        # after sharding: fully_shard replaces the parameters
        self.opt = torch.optim.AdamW(
            mup.param_groups(self.model, cfg.model),  # one group, or muP's three
            lr=cfg.learning_rate,
            betas=cfg.betas,
            weight_decay=cfg.weight_decay,
            fused=rt.cuda,
        )
        self.ema = (
            AveragedModel(
                self.model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True
            )
            if cfg.ema_decay
            else None
        )
        self.checkpointing = Checkpointing(
            cfg, rt, self.model, self.opt, self.precision.scaler, self.ema
        )
        self.state = self.checkpointing.restore()
        if tracker is not None:  # the run of this trial's first attempt, if it kept one
            tracker.params(trial_params(cfg))
            tracker.start(self.state.tracking.get(tracker.key))
        self.compile_cache: CompileCache | None = None
        if cfg.compile:
            if cfg.compile_cache:
                device = torch.cuda.get_device_name(rt.device) if rt.cuda else "cpu"
                self.compile_cache = CompileCache(
                    cfg.compile_cache, cache_name(cfg, rt.world, device)
                )
                self.compile_cache.restore()
            forward = torch.compile(forward, mode=cfg.compile_mode)
        self.data = open_trial_data(cfg, TRAIN)
        batches = loader(self.data, cfg, rt, self.state.step)
        self.step = Step(
            cfg, rt, self.model, forward, self.ddp, self.opt, self.precision, self.ema, batches
        )
        self.losses = LossWatch(cfg, rt, self.state, telemetry)
        self.throughput = Throughput(self.state)
        self.flops_per_sample = cfg.model.flops_per_sample().total
        self.tokens_per_sample = cfg.model.tokens_per_sample
        self.peak = peak_flops(cfg, rt.device)

    def build_model(self) -> nn.Module:
        cfg, rt = self.cfg, self.rt
        torch.manual_seed(cfg.seed)
        residual = self.precision.autocast if cfg.low_precision_residual else None
        try:
            model = adapters.build(cfg.model, residual_dtype=residual).to(rt.device)
        except adapters.FamilyError as err:
            raise TrialFailed(str(err)) from None
        self.params = sum(p.numel() for p in model.parameters())
        if self.params != cfg.model.params().total:
            raise TrialFailed(
                f"model has {self.params} parameters, the planner counted "
                f"{cfg.model.params().total}"
            )
        if self.telemetry is not None:
            self.telemetry.set(params=self.params, steps_total=cfg.steps)
        return model

    def parallelize(self) -> tuple[DistributedDataParallel | None, Any]:
        """FSDP2 (each block sharded) or DDP over the ranks; the model as the step calls it."""
        cfg, rt, model = self.cfg, self.rt, self.model
        if cfg.fsdp and rt.world > 1:
            from torch.distributed.fsdp import fully_shard

            for block in adapters.blocks(model):
                fully_shard(block)
            fully_shard(model)
            return None, model
        if rt.world > 1:
            ddp = DistributedDataParallel(model, device_ids=[rt.local_rank] if rt.cuda else None)
            return ddp, ddp
        return None, model

    # -- the loop ---------------------------------------------------------------------------------

    def fit(self) -> tuple[dict[str, Any], int]:
        """Train to the last step (or until preempted), then evaluate; the result and exit code."""
        cfg, state = self.cfg, self.state
        try:
            with Preemption(self.rt) as preemption:
                for step in range(state.step, cfg.steps):
                    self.losses.add(self.step(step))
                    state.step, state.samples = step + 1, state.samples + cfg.global_batch_size
                    self.throughput.add(cfg.global_batch_size)
                    stop = preemption.stop()
                    if self.after_step(step, stop):
                        note = f"SIGTERM at step {state.step}; checkpoint saved"
                        result = {"status": "preempted", "step": state.step, "error": note}
                        return result, PREEMPTED_EXIT_CODE
                self.throughput.finish()
                self.checkpointing.save(state)  # a SIGTERM now waits for it
        finally:
            if self.compile_cache is not None:
                self.compile_cache.close()
        return self.result(self.evaluate()), 0

    def after_step(self, step: int, stop: bool) -> bool:
        """Log, checkpoint and stop where this step calls for it; True when preempted. The same
        steps on every rank (stop is agreed), so the collectives line up."""
        cfg, state = self.cfg, self.state
        # this process's first step is logged on its own: that window is the warm-up
        first = step == self.throughput.first_step
        log = step % cfg.log_every == 0 or first or state.step == cfg.steps
        branch = state.step in cfg.branch_points
        save = branch or (bool(cfg.checkpoint_every) and state.step % cfg.checkpoint_every == 0)
        if not (log or save or stop):
            return False
        value = self.losses.settle()  # its read-back waits for every step queued so far
        if log:
            self.log(step, value)
        cache = self.compile_cache
        if cache is not None and first and not cache.hit and self.rt.main:
            cache.save()  # the first step compiled forward and backward: share the kernels
        if self.tracker is not None and self.tracker.run_id is not None:
            state.tracking[self.tracker.key] = self.tracker.run_id  # kept with the checkpoint
        if save:
            self.checkpointing.save(state)
        if branch:  # kept for the cooldown branches that start here
            self.checkpointing.save(state, branch_name(state.step))
        if stop:  # every rank agrees, so the collective checkpoint cannot hang
            self.checkpointing.save(state, CHECKPOINT)
        return stop

    def log(self, step: int, value: float) -> None:
        rate = self.throughput.window(step)
        if self.telemetry is None:
            return
        state, cfg = self.state, self.cfg
        values = dict(
            train_loss=value,
            train_loss_ema=state.loss_ema,
            step=state.step,
            steps_total=cfg.steps,
            samples=state.samples,
            tokens=state.samples * self.tokens_per_sample,
            flops=state.samples * self.flops_per_sample,
            tokens_per_second=rate * self.tokens_per_sample,
            learning_rate=self.step.lr,
            mfu=self.mfu(rate),
            epochs=state.samples / len(self.data),
        )
        self.telemetry.set(**values)
        if self.tracker is not None:
            self.tracker.metrics(state.step, values)
        if cfg.progress:
            write_progress(cfg.progress, state.step, cfg.steps, state.loss_ema)

    def mfu(self, rate: float) -> float | None:
        if not self.peak:
            return None
        return rate * self.flops_per_sample / (self.peak * self.rt.world)

    # -- the end ----------------------------------------------------------------------------------

    def evaluate(self) -> dict[str, float]:
        model = self.ema.module if self.ema is not None else self.model
        metrics = evaluate(self.cfg, model, self.rt, self.precision.autocast)
        measured = {
            k: metrics.get(k) for k in ("eval_loss", "eval_bpd", "eval_fid", "eval_loss_se")
        }
        if self.telemetry is not None:
            self.telemetry.set(**measured)
        if self.tracker is not None:
            self.tracker.metrics(self.state.step, measured)
        return metrics

    def result(self, metrics: dict[str, float]) -> dict[str, Any]:
        state, per_sample = self.state, self.flops_per_sample
        rate = self.throughput.steady_rate()
        cache = self.compile_cache
        return {
            "status": "succeeded",
            "steps": state.step,
            "samples": state.samples,
            "tokens": state.samples * self.tokens_per_sample,
            "flops": state.samples * per_sample,
            # a branch's own share: the prefix it started from was paid for by its stable run
            "branched_from_step": self.checkpointing.branched,
            "own_flops": (state.samples - self.checkpointing.prefix_samples) * per_sample,
            "params": self.params,
            "train_loss_ema": state.loss_ema,
            **metrics,
            "epochs": state.samples / len(self.data),
            "train_seconds": round(state.seconds, 3),  # warm-up included
            "tokens_per_second": rate * self.tokens_per_sample,  # steady: warm-up left out
            "mfu": self.mfu(rate),
            "compile_cache": cache.status if cache is not None else None,
            "compile_cache_misses": inductor_cache_misses() if self.cfg.compile else None,
            "losses": state.losses,
        }


def write_progress(path: str, step: int, steps: int, loss: float | None) -> None:
    """Step and loss for a watcher (the local runner's display), replaced atomically."""
    atomic_write(Path(path), json.dumps({"step": step, "steps": steps, "loss": loss}).encode())
