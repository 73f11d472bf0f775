"""How many trials share one GPU: small rungs leave most of a GPU idle, so several share it.

A trial alone on a GPU reaches the MFU the curve gives for its size (plan.H100_MFU_CURVE: 4.7% at
5.2M parameters, 32% at 130M). Trials packed k to a GPU (separate processes; with CUDA MPS where
the node runs it) share its throughput: k trials at MFU m each use about k*m of it, so a rung packs
k = floor(saturation / m) trials, where `saturation` is the MFU a GPU reaches when kept busy
(what the large rungs reach alone), capped by `maxTrialsPerGpu` and by memory (k trials' peak
memory at the micro-batch the MFU figures were measured at, estimated below, must fit the GPU
with headroom). A packed trial trains as one process on 1/k of one GPU whatever gpusPerNode and
nodes say (a 1M-parameter model gains nothing from eight GPUs); rungs with k = 1 train as
configured. Pure: the engine counts a packed trial as 1/(k x gpusPerNode x nodes) of a
`parallelism` slot; the local device pool places it on a GPU with room, the operator requests a
GPU-sharing plugin's resource for it; its automatic micro-batch is the largest its share holds.

The memory estimate is calibrated on the trainer's H100 figures
(benchmarks/results/trainer-h100-2026-11-25.jsonl, bf16, compiled, batch 64): 16 bytes per
parameter (fp32 weights, gradients, AdamW's two moments) plus about 38 bytes per activation element
(batch x tokens x width x depth) plus a CUDA context: within 3% of the six measured peaks from 130M
to 793M parameters (batch 64 and 128), and 33% over at 5.2M, the safe side
(tests/unit/test_packing.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from isoflop import api
from isoflop.sweep.plan import H100_MFU_CURVE, MfuCurve, Trial

BYTES_PER_PARAM = 16.0  # fp32 weights + grads + AdamW m and v
BYTES_PER_ACTIVATION = 38.0  # per batch x token x width x layer, bf16 with fused attention
CONTEXT_GIB = 0.5  # a process's CUDA context and allocator slack
HEADROOM = 0.9  # of the GPU's memory that packed trials may plan to use
MEASURED_BATCH = 64  # the micro-batch at which the MFU curve was measured


def estimated_memory_gib(trial: Trial, micro_batch: int | None = None) -> float:
    """A trial's peak GPU memory per process at a micro-batch (default: its whole batch), GiB."""
    batch = trial.batch_size if micro_batch is None else micro_batch
    activations = batch * trial.tokens_per_sample * trial.width * trial.depth
    total = BYTES_PER_PARAM * trial.params + BYTES_PER_ACTIVATION * activations
    return total / 2**30 + CONTEXT_GIB


def micro_batch(trial: Trial, per_rank: int, memory_gib: float) -> int:
    """The largest micro-batch (the rank's share halved until it fits, at least 1) whose
    estimated peak fits `memory_gib`: larger micro-batches keep a GPU busier, and the rest of the
    share is gradient accumulation."""
    m = per_rank
    while m > 1 and estimated_memory_gib(trial, m) > memory_gib:
        m = (m + 1) // 2
    return m


@dataclass(frozen=True)
class Packing:
    """Where each trial trains: the packing policy (spec.resources.packing) and GPU memory."""

    max_per_gpu: int = 1  # 1: never packed
    saturation: float = 0.40  # the MFU a GPU reaches when kept busy
    gpu_memory_gib: float = 80.0
    gpus: int = 1  # an unpacked trial's GPUs: gpusPerNode x nodes (0: CPU trials)
    curve: MfuCurve = H100_MFU_CURVE
    replicas: int | None = None  # a cluster's GPU-sharing plugin: its replicas per GPU

    @classmethod
    def of(cls, spec: api.ScalingSweepSpec) -> Packing:
        r = spec.resources
        gpus = r.gpus_per_node * r.nodes
        if r.packing is None or gpus == 0:
            return cls(gpu_memory_gib=r.gpu_memory_gib, gpus=gpus)
        p = r.packing
        limit = min(p.max_trials_per_gpu, p.replicas_per_gpu or p.max_trials_per_gpu)
        return cls(limit, p.saturation_mfu, r.gpu_memory_gib, gpus, replicas=p.replicas_per_gpu)

    def per_gpu(self, trial: Trial) -> int:
        """How many trials like this one share one GPU (1: not packed, it trains on its
        gpusPerNode x nodes GPUs as configured)."""
        if self.max_per_gpu <= 1:
            return 1
        by_mfu = math.floor(self.saturation / self.curve.at(trial.params) + 1e-9)
        # each at the micro-batch the MFU figures were measured at (or its whole batch if less)
        need = estimated_memory_gib(trial, min(trial.batch_size, MEASURED_BATCH))
        by_memory = math.floor(HEADROOM * self.gpu_memory_gib / need)
        return max(1, min(self.max_per_gpu, by_mfu, by_memory))

    def gpu_share(self, trial: Trial) -> Fraction:
        """The part of one GPU a packed trial takes (1/k); 1: its GPUs whole."""
        return Fraction(1, self.per_gpu(trial))

    def share(self, trial: Trial) -> Fraction:
        """The part of a `parallelism` slot (one unpacked trial's GPUs) this trial takes."""
        k = self.per_gpu(trial)
        return Fraction(1) if k == 1 else Fraction(1, k * max(self.gpus, 1))

    def replicas_requested(self, trial: Trial) -> int:
        """A packed trial's request of the cluster's shared-GPU resource: ceil(replicas / k), so
        the scheduler puts at most k such trials on one GPU (fewer when k does not divide it)."""
        if self.replicas is None:
            raise ValueError("no shared-GPU resource: spec.resources.packing.replicasPerGpu")
        return math.ceil(self.replicas / self.per_gpu(trial))

    def ranks(self, trial: Trial) -> int:
        """Training processes of the trial: one when packed, else one per GPU (at least one)."""
        return 1 if self.per_gpu(trial) > 1 else max(self.gpus, 1)

    def micro_batch(self, trial: Trial) -> int:
        """The automatic micro-batch: the largest that fits a rank's GPU (its share of one when
        packed)."""
        per_rank = max(trial.batch_size // self.ranks(trial), 1)
        return micro_batch(trial, per_rank, HEADROOM * self.gpu_memory_gib / self.per_gpu(trial))


def sweep_mfu(trials: list[Trial], packing: Packing, peak_flops: float) -> dict[str, float]:
    """The planned sweep's estimated GPU-hours and FLOPs-weighted MFU (total FLOPs over GPU time
    x peak), each trial alone on a GPU and packed. The packed figure assumes k trials packed on a
    GPU each keep their solo speed (k x MFU stays under saturation), so each costs 1/k of its solo
    GPU time: an estimate to be measured against (benchmarks/bench_sweep_gpu.py)."""
    flops = float(sum(t.flops_exact for t in trials))
    alone = sum(t.flops_exact / (packing.curve.at(t.params) * peak_flops) for t in trials)
    packed = sum(
        t.flops_exact / (packing.curve.at(t.params) * peak_flops) * packing.gpu_share(t)
        for t in trials
    )
    return {
        "gpu_hours_alone": alone / 3600,
        "gpu_hours_packed": packed / 3600,
        "mfu_alone": flops / (alone * peak_flops) if alone else math.nan,
        "mfu_packed": flops / (packed * peak_flops) if packed else math.nan,
    }
