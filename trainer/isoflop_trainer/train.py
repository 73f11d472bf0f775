"""One trial's training loop, launched by torchrun (DDP or FSDP2; NCCL on GPU, gloo on CPU).

Determinism across world sizes: every random draw of a step (noise, timesteps, caption dropout) is
made for the whole global batch from a generator seeded by (seed, step), and each rank takes its
slice; sample i of the data is a pure function of i. So 1 process and N processes at the same
global batch see the same samples with the same noise, and a resumed run continues exactly.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import signal
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from isoflop_trainer.components.compile_cache import CompileCache, cache_name, inductor_cache_misses
from isoflop_trainer.components.telemetry import Telemetry, write_result
from isoflop_trainer.config import TrainConfig, peak_bf16_flops
from isoflop_trainer.data.datasets import (
    TRAIN,
    VALIDATION,
    Batch,
    Dataset,
    Store,
    atomic_write,
    open_dataset,
)
from isoflop_trainer.data.store import PERMANENT_EXIT_CODE
from isoflop_trainer.evaluation.fid import fid, load_decoder, load_features
from isoflop_trainer.evaluation.loss import likelihood_bpd, validation_loss_and_error
from isoflop_trainer.models.dit import DiT
from isoflop_trainer.models.flow import drop_text, flow_loss, keep_captions, sample_timesteps

CHECKPOINT = "checkpoint.pt"
PREEMPTED_EXIT_CODE = 143  # 128 + SIGTERM: the Job retries, the trial resumes from its checkpoint


class DataError(Exception):
    """The data cannot be read or does not match the trial: fail once, never retry."""


class TrialFailed(Exception):
    """The trial cannot succeed (NaN, divergence, bad data): a clear failure result, not a retry."""


# What the machine or the network did, not the trial: worth another attempt.
TRANSIENT = (dist.DistError, ConnectionError, TimeoutError, OSError)
TRANSIENT_WORDS = ("NCCL", "CUDA error", "ECC", "Xid", "socket", "timed out")


def permanent(err: BaseException, stepped: bool) -> bool:
    """Whether a failure will recur on every retry. Training is deterministic (seeded data, init and
    noise), so what the trial itself runs into does: missing or mismatched data, a config the
    model or batch cannot take, a NaN or divergence, any error before its first step completes,
    out of memory at the first step. Transient, and retried: what the machine or the network did
    (NCCL, CUDA errors, timeouts, lost peers, I/O), and running out of memory after steps ran."""
    if isinstance(err, TrialFailed | DataError):
        return True
    if isinstance(err, torch.OutOfMemoryError):
        return not stepped
    if isinstance(err, TRANSIENT) or any(w in str(err) for w in TRANSIENT_WORDS):
        return False
    return not stepped or isinstance(err, ValueError | TypeError | KeyError | IndexError)


@dataclass
class Runtime:
    rank: int
    world: int
    local_rank: int
    device: torch.device
    stepped: bool = False  # a training step completed in this process (see `permanent`)

    @property
    def main(self) -> bool:
        return self.rank == 0


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


@dataclass
class State:
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


def peak_flops(cfg: TrainConfig, device: torch.device) -> float | None:
    if cfg.peak_flops:
        return cfg.peak_flops
    if device.type == "cuda":
        return peak_bf16_flops(torch.cuda.get_device_name(device))
    return None


def branch_name(step: int) -> str:
    """The checkpoint a stable run keeps at a branch point."""
    return f"branch-{step:09d}.pt"


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


def train(cfg: TrainConfig) -> tuple[dict[str, Any], int]:
    """Run a trial; returns its result and the process exit code (0; 1 failed, worth a retry; 65
    failed for good, see `permanent`; 143 preempted)."""
    rt = setup()
    telemetry = None
    if rt.main:
        telemetry = Telemetry(
            cfg.sweep, cfg.trial, cfg.budget, cfg.metrics_port, cfg.metrics_address
        )
    start = time.time()
    try:
        result, code = _train(cfg, rt, telemetry)
    except Exception as err:  # every failure ends in a readable result, classed for retries
        result = {"status": "failed", "error": str(err) or type(err).__name__}
        if not isinstance(err, TrialFailed | DataError):
            result["error"] = f"{type(err).__name__}: {err}"
            result["trace"] = traceback.format_exc(limit=3)
        result["permanent"] = permanent(err, rt.stepped)
        code = PERMANENT_EXIT_CODE if result["permanent"] else 1
    result = {
        "sweep": cfg.sweep,
        "trial": cfg.trial,
        "budget": cfg.budget,
        **result,
        "wall_seconds": round(time.time() - start, 3),
    }
    if rt.main:
        write_result(result, cfg.results, cfg.termination_log)
        if telemetry is not None:
            telemetry.set(done=1, failed=1 if result["status"] == "failed" else 0)
            telemetry.linger(cfg.metrics_linger_seconds)
            telemetry.close()
    if rt.world > 1 and dist.is_initialized():
        dist.destroy_process_group()
    return result, code


def _train(
    cfg: TrainConfig, rt: Runtime, telemetry: Telemetry | None
) -> tuple[dict[str, Any], int]:
    B = cfg.global_batch_size
    if B % rt.world:
        raise TrialFailed(f"global batch {B} does not split evenly over {rt.world} processes")
    per_rank = B // rt.world
    cuda = rt.device.type == "cuda"
    autocast = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision) if cuda else None

    torch.manual_seed(cfg.seed)
    residual = autocast if cfg.low_precision_residual else None  # None on CPU: fp32 throughout
    model = DiT(cfg.model, residual_dtype=residual).to(rt.device)
    n_params = sum(p.numel() for p in model.parameters())
    if n_params != cfg.model.params().total:
        raise TrialFailed(
            f"model has {n_params} parameters, the planner counted {cfg.model.params().total}"
        )
    if telemetry is not None:
        telemetry.set(params=n_params, steps_total=cfg.steps)
    # Shard or wrap first, then build the optimizer: fully_shard replaces the parameters.
    wrapped: Any = model
    ddp = None
    if cfg.fsdp and rt.world > 1:
        from torch.distributed.fsdp import fully_shard

        for block in model.blocks:
            fully_shard(block)
        fully_shard(model)
    elif rt.world > 1:
        ddp = DistributedDataParallel(model, device_ids=[rt.local_rank] if cuda else None)
        wrapped = ddp
    opt = torch.optim.AdamW(
        model.parameters(),
        lr=cfg.learning_rate,
        betas=cfg.betas,
        weight_decay=cfg.weight_decay,
        fused=cuda,
    )
    # fp16 needs loss scaling, or small gradients underflow to zero; bf16 and fp32 do not
    scaler = torch.amp.GradScaler(rt.device.type, enabled=cuda and cfg.precision == "fp16")
    ema = (
        AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
        if cfg.ema_decay
        else None
    )
    # Full (unsharded) state dicts: one checkpoint format for 1 process, DDP and FSDP alike.
    full = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state = State()
    ckpt = Checkpointer(cfg.checkpoint) if cfg.checkpoint else None
    saved = ckpt.load() if ckpt is not None else None
    resumed = saved is not None
    # a branch: the step it started from and the samples its stable run trained before it
    branched: int | None = saved.get("branched_from") if saved is not None else None
    prefix_samples: int = saved.get("prefix_samples", 0) if saved is not None else 0
    if saved is None and cfg.branch_from is not None:  # a cooldown branch's first attempt
        saved = Checkpointer(cfg.branch_from).load(branch_name(cfg.branch_step))
        if saved is None:
            raise FileNotFoundError(  # transient: the stable run may still get there
                f"no branch checkpoint at step {cfg.branch_step} in {cfg.branch_from}: its "
                "stable run has not reached it"
            )
        branched, prefix_samples = saved["state"]["step"], saved["state"]["samples"]
        # this trial's own steps, time and throughput only; the prefix is the parent's
        saved["state"].update(losses=[], seconds=0.0, steady_seconds=0.0, steady_samples=0)
    if saved is not None:
        load = StateDictOptions(full_state_dict=True)
        set_model_state_dict(model, saved["model"], options=load)
        set_optimizer_state_dict(model, opt, saved["optimizer"], options=load)
        state = State(**saved["state"])
        torch.set_rng_state(saved["rng"])
        if "scaler" in saved:
            scaler.load_state_dict(saved["scaler"])
        if ema is not None and "ema" in saved:
            ema.load_state_dict(saved["ema"])
        if rt.main:  # the trial's log says where this attempt starts
            how = "resumed" if resumed else "branched"
            print(
                f"isoflop-train: trial {cfg.trial} {how} from step {state.step} of {cfg.steps} "
                f"({cfg.checkpoint if resumed else cfg.branch_from})",
                flush=True,
            )
    cache = None
    if cfg.compile:
        if cfg.compile_cache:
            device = torch.cuda.get_device_name(rt.device) if cuda else "cpu"
            cache = CompileCache(cfg.compile_cache, cache_name(cfg, rt.world, device))
            cache.restore()
        wrapped = torch.compile(wrapped, mode=cfg.compile_mode)

    shape = (cfg.model.latent_channels, cfg.model.latent_height, cfg.model.latent_width)
    data = open_data(cfg, TRAIN)
    loader = DataLoader(
        RankBatches(data, cfg, rt, state.step),
        batch_size=None,
        num_workers=cfg.num_workers,
        worker_init_fn=_worker_init,
        persistent_workers=False,
        pin_memory=cuda,  # page-locked batches: the copies to the GPU are truly asynchronous
    )
    parts = chunks(per_rank, cfg.micro_batch_size or per_rank)
    flops_per_sample = cfg.model.flops_per_sample().total
    tokens_per_sample = cfg.model.tokens_per_sample
    peak = peak_flops(cfg, rt.device)

    preempted = False

    def on_sigterm(signum: int, frame: Any) -> None:
        nonlocal preempted
        preempted = True

    previous = signal.signal(signal.SIGTERM, on_sigterm)

    def checkpoint(name: str = CHECKPOINT) -> None:
        if ckpt is None:
            return
        # collective under FSDP (every rank gathers), written by rank 0 alone
        weights = get_model_state_dict(model, options=full)
        moments = get_optimizer_state_dict(model, opt, options=full)
        if rt.main:
            ckpt.save(
                {
                    "model": weights,
                    "optimizer": moments,
                    "state": state.__dict__,
                    "rng": torch.get_rng_state(),
                    "scaler": scaler.state_dict(),
                    **({"ema": ema.state_dict()} if ema is not None else {}),
                    "config": cfg.to_dict(),
                    "branched_from": branched,
                    "prefix_samples": prefix_samples,
                },
                name,
            )

    def vote(stop: bool) -> bool:
        """Whether any rank was told to stop: a CPU collective, so the GPU queue keeps running."""
        if rt.world == 1:
            return stop
        flag = torch.tensor([float(stop)])
        dist.all_reduce(flag)
        return bool(flag.item() > 0)

    pending: list[torch.Tensor] = []  # losses of the steps since the last read-back, on device

    def settle() -> float:
        """Read the pending losses back in one transfer (the loop's only wait on the device) and
        account for them step by step: loss EMA, curve, NaN and divergence checks. Reading every
        step would drain the GPU queue each step. A NaN step's update is applied before it is
        seen, but the trial then fails at that step and no checkpoint is written after it."""
        losses = torch.stack(pending).float()
        pending.clear()
        if rt.world > 1:
            dist.all_reduce(losses)  # the mean over ranks
            losses /= rt.world
        first = state.step - len(losses)
        value = math.nan
        for i, value in enumerate(losses.tolist()):
            account(first + i, value)
        return value

    def account(step: int, value: float) -> None:
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

    batches = iter(loader)
    window_start, window_samples = time.perf_counter(), 0
    first_step = state.step  # always logged: its window holds compilation and warm-up
    try:
        for step in range(state.step, cfg.steps):
            lr = cfg.learning_rate * cfg.lr_multiplier(step)
            for group in opt.param_groups:
                group["lr"] = lr
            g = torch.Generator(device=rt.device).manual_seed(step_seed(cfg.seed, step))
            noise_all = torch.randn((B, *shape), generator=g, device=rt.device)
            t_all = sample_timesteps(B, cfg.timestep_sampling, g, str(rt.device))
            keep_all = keep_captions(B, cfg.text_dropout, g, str(rt.device))
            opt.zero_grad(set_to_none=True)
            step_loss = torch.zeros((), device=rt.device)
            for k, (lo, hi) in enumerate(parts):
                got_step, got_k, batch = next(batches)
                assert (got_step, got_k) == (step, k), "data loader out of order"
                rows = slice(rt.rank * per_rank + lo, rt.rank * per_rank + hi)
                x0 = batch.latents.to(rt.device, non_blocking=True)
                text = drop_text(batch.text.to(rt.device, non_blocking=True), keep_all[rows])
                weight = (hi - lo) / per_rank
                sync = (
                    ddp.no_sync()
                    if ddp is not None and k < len(parts) - 1
                    else contextlib.nullcontext()
                )
                with sync:
                    with torch.autocast(rt.device.type, autocast, enabled=autocast is not None):
                        loss = flow_loss(wrapped, x0, text, t_all[rows], noise_all[rows])
                    scaler.scale(loss * weight).backward()  # outside autocast, as torch advises
                step_loss += loss.detach() * weight
            pending.append(step_loss)
            if cfg.grad_clip > 0:
                scaler.unscale_(opt)  # clip the true gradients (a no-op unless fp16)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(opt)  # fp16: skipped when the scaled gradients overflowed
            scaler.update()
            if ema is not None:
                ema.update_parameters(model)
            state.step, state.samples = step + 1, state.samples + B
            rt.stepped = True
            window_samples += B
            stop = vote(preempted)
            # this process's first step is logged on its own: that window is the warm-up
            log = step % cfg.log_every == 0 or step == first_step or state.step == cfg.steps
            branch = state.step in cfg.branch_points
            save = branch or (bool(cfg.checkpoint_every) and state.step % cfg.checkpoint_every == 0)
            if not (log or save or stop):
                continue
            # the same steps on every rank (stop is agreed), so the collectives line up
            value = settle()  # its read-back waits for every step queued so far
            if log:
                elapsed = time.perf_counter() - window_start
                rate = window_samples / max(elapsed, 1e-9)
                state.seconds += elapsed
                if step != first_step:
                    state.steady_seconds += elapsed
                    state.steady_samples += window_samples
                window_start, window_samples = time.perf_counter(), 0
                if telemetry is not None:
                    telemetry.set(
                        train_loss=value,
                        train_loss_ema=state.loss_ema,
                        step=state.step,
                        steps_total=cfg.steps,
                        samples=state.samples,
                        tokens=state.samples * tokens_per_sample,
                        flops=state.samples * flops_per_sample,
                        tokens_per_second=rate * tokens_per_sample,
                        learning_rate=lr,
                        mfu=rate * flops_per_sample / (peak * rt.world) if peak else None,
                        epochs=state.samples / len(data),
                    )
                    if cfg.progress:
                        write_progress(cfg.progress, state, cfg.steps)
            if cache is not None and step == first_step and not cache.hit and rt.main:
                cache.save()  # the first step compiled forward and backward: share the kernels
            if save:
                checkpoint()
            if branch:  # kept for the cooldown branches that start here
                checkpoint(branch_name(state.step))
            if stop:  # every rank agrees, so the collective checkpoint cannot hang
                checkpoint()
                note = f"SIGTERM at step {state.step}; checkpoint saved"
                return {
                    "status": "preempted",
                    "step": state.step,
                    "error": note,
                }, PREEMPTED_EXIT_CODE
        state.seconds += time.perf_counter() - window_start
        checkpoint()
    finally:
        signal.signal(signal.SIGTERM, previous)
        if cache is not None:
            cache.close()

    metrics = evaluate(cfg, ema.module if ema is not None else model, rt, autocast)
    if telemetry is not None:
        telemetry.set(
            eval_loss=metrics.get("eval_loss"),
            eval_bpd=metrics.get("eval_bpd"),
            eval_fid=metrics.get("eval_fid"),
            eval_loss_se=metrics.get("eval_loss_se"),
        )
    if state.steady_seconds > 0:
        rate = state.steady_samples / state.steady_seconds
    else:  # a run of a single window: all of it
        rate = state.samples / state.seconds if state.seconds else 0.0
    result = {
        "status": "succeeded",
        "steps": state.step,
        "samples": state.samples,
        "tokens": state.samples * tokens_per_sample,
        "flops": state.samples * flops_per_sample,
        # a branch's own share: the prefix it started from was paid for by its stable run
        "branched_from_step": branched,
        "own_flops": (state.samples - prefix_samples) * flops_per_sample,
        "params": n_params,
        "train_loss_ema": state.loss_ema,
        **metrics,
        "epochs": state.samples / len(data),
        "train_seconds": round(state.seconds, 3),  # warm-up included
        "tokens_per_second": rate * tokens_per_sample,  # steady: warm-up windows left out
        "mfu": rate * flops_per_sample / (peak * rt.world) if peak else None,
        "compile_cache": cache.status if cache is not None else None,
        "compile_cache_misses": inductor_cache_misses() if cfg.compile else None,
        "losses": state.losses,
    }
    return result, 0


def open_data(cfg: TrainConfig, split: int) -> Dataset:
    """The trial's training or validation data; a DataError when it is missing or mismatched."""
    shape = (cfg.model.latent_channels, cfg.model.latent_height, cfg.model.latent_width)
    uri = (cfg.validation_data or cfg.data) if split == VALIDATION else cfg.data
    try:
        return open_dataset(uri, shape, cfg.model.text_length, cfg.model.text_dim, cfg.seed, split)
    except (FileNotFoundError, PermissionError, ValueError) as err:
        raise DataError(str(err)) from None  # an unreachable store (ConnectionError) is retried


def write_progress(path: str, state: State, steps: int) -> None:
    """Step and loss for a watcher (the local runner's display), replaced atomically."""
    progress = {"step": state.step, "steps": steps, "loss": state.loss_ema}
    atomic_write(Path(path), json.dumps(progress).encode())


def evaluate(
    cfg: TrainConfig, model: Any, rt: Runtime, autocast: torch.dtype | None
) -> dict[str, float]:
    """Validation loss (fixed pairs), bits/dim and FID on rank 0 (every rank under FSDP)."""
    if not rt.main and not cfg.fsdp:
        return {}
    val = open_data(cfg, VALIDATION)
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
