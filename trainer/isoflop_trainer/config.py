"""DiT configuration with exact parameter counts and training FLOPs (torch-free).

This module is the single description of the architecture that `model.py` builds; the planner
imports it to size trials. The formulas below are exact for that model, term by term:

Inputs per sample: a latent (C, H, W), a timestep t, text embeddings (L, d_txt) from a frozen
encoder (they carry their own positions). p = patch size, d = width, m = MLP hidden width,
d_h = head dim, T = (H/p)(W/p) image tokens, k = 1 with an in-context timestep token, else 0.

    x_embedder  Conv2d(C, d, p, stride=p) + bias; fixed 2-D sin-cos positions (a buffer)
    t_embedder  sinusoid(t, 256) -> Linear(256, d) -> SiLU -> Linear(d, d)          -> c (d,)
    y_embedder  Linear(d_txt, d) on every text token; no-caption (CFG) = zero embeddings
    block, in-context    on [t?, text, image] (S = k + L + T tokens):
        x += g1 * Attn(mod(LN(x)))      qkv Linear(d, 3d), out Linear(d, d), qk RMSNorm(d_h)?
        x += g2 * MLP(mod(LN(x)))       Linear(d, m) -> GELU(tanh) -> Linear(m, d)
    block, cross-attention  on [t?, image] (S = k + T tokens), text only as keys/values:
        x += g1 * Attn(mod(LN(x)))
        x += CrossAttn(LN(x), text)     q Linear(d, d), kv Linear(d, 2d) on text, out Linear(d, d)
        x += g2 * MLP(mod(LN(x)))
    adaLN-Zero (default): per block SiLU(c) -> Linear(d, 6d) gives shift/scale/gate, once per
        sample; LayerNorms have no affine. In-context timestep token instead: c is prepended as a
        token, no modulation, LayerNorms carry weight and bias.
    final layer on image tokens only: LN, mod (adaLN Linear(d, 2d)), Linear(d, p*p*C) -> velocity

FLOPs are matmul FLOPs (2 per multiply-add), the quantity `torch.utils.flop_counter` counts;
attention is 4*S_q*S_k*d forward. Backward is 2x forward for every matmul whose input needs a
gradient and 1x (weight gradient only) where it does not: the patch embedding, the timestep MLP's
first layer and the text projection, whose inputs are data. Norms, activations and softmax are not
counted. Attention backward is counted as 2x forward (model FLOPs, no recomputation), which is what
the counter reports for the math SDPA kernel.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from isoflop_trainer.counts import Accounting, FlopCount, ParamCount
from isoflop_trainer.families import ClassConfig

Family = Literal["in-context", "cross-attention"]

# dense bf16 peak FLOP/s per GPU, by a fragment of the device name (H100/H200: SXM)
PEAK_BF16_FLOPS = {"H100": 989.4e12, "H200": 989.4e12, "A100": 312e12, "L40S": 362e12}


def peak_bf16_flops(device_name: str) -> float | None:
    """The dense bf16 peak of a GPU named like torch.cuda.get_device_name(); None if unknown."""
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in device_name), None)


# The generated datasets procedural://NAME names (the empty name is shapes)
PROCEDURAL_DATASETS = ("shapes",)


TimestepConditioning = Literal["adaln-zero", "in-context"]

FAMILIES: tuple[Family, ...] = ("in-context", "cross-attention")
Parameterization = Literal["standard", "mup"]
PARAMETERIZATIONS: tuple[Parameterization, ...] = ("standard", "mup")
FREQUENCY_DIM = 256  # sinusoidal timestep features fed to the timestep MLP


@dataclass(frozen=True)
class DiTConfig(Accounting):
    """One DiT: architecture, input shapes, and the derived exact counts."""

    family: Family
    depth: int
    width: int
    heads: int
    mlp_ratio: float = 4.0
    patch_size: int = 2
    latent_channels: int = 4
    latent_height: int = 32
    latent_width: int = 32
    text_length: int = 77
    text_dim: int = 768
    timestep_conditioning: TimestepConditioning = "adaln-zero"
    qk_norm: bool = False
    # standard, or muP (isoflop_trainer.models.mup): per-layer init and Adam rates by the width
    # ratio to base_width (None: this model's own width, where muP is the standard exactly)
    parameterization: Parameterization = "standard"
    base_width: int | None = None

    def __post_init__(self) -> None:
        if self.parameterization not in PARAMETERIZATIONS:
            raise ValueError(
                f"parameterization must be one of {PARAMETERIZATIONS}, "
                f"got {self.parameterization!r}"
            )
        if self.base_width is not None and self.base_width < 1:
            raise ValueError(f"base_width must be at least 1, got {self.base_width}")
        for name in ("depth", "width", "heads", "patch_size", "latent_channels", "text_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.text_dim < 1:
            raise ValueError(f"text_dim must be at least 1, got {self.text_dim}")
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {self.family!r}")
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by {self.heads} heads")
        for side in (self.latent_height, self.latent_width):
            if side % self.patch_size:
                raise ValueError(f"latent side {side} is not divisible by patch {self.patch_size}")
        if self.mlp_hidden < 1:
            raise ValueError(f"mlp_ratio {self.mlp_ratio} gives an empty MLP")

    # -- shapes -------------------------------------------------------------------------------

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    @property
    def mlp_hidden(self) -> int:
        return round(self.mlp_ratio * self.width)

    @property
    def adaln(self) -> bool:
        return self.timestep_conditioning == "adaln-zero"

    @property
    def image_tokens(self) -> int:
        p = self.patch_size
        return (self.latent_height // p) * (self.latent_width // p)

    @property
    def patch_dim(self) -> int:
        """Values per patch, in and out: p * p * C."""
        return self.patch_size * self.patch_size * self.latent_channels

    @property
    def sequence_length(self) -> int:
        """Tokens in the self-attention sequence of every block."""
        time_token = 0 if self.adaln else 1
        text = self.text_length if self.family == "in-context" else 0
        return time_token + text + self.image_tokens

    @property
    def tokens_per_sample(self) -> int:
        """D per sample for C = 6ND: tokens that pass through every block weight."""
        return self.sequence_length

    # -- parameters ---------------------------------------------------------------------------

    def params(self) -> ParamCount:
        d, m, dh = self.width, self.mlp_hidden, self.head_dim
        attn = 4 * d * d + 4 * d + (2 * dh if self.qk_norm else 0)
        mlp = 2 * d * m + m + d
        if self.adaln:
            cond = 6 * d * d + 6 * d  # adaLN modulation
        else:
            norms = 2 if self.family == "in-context" else 3
            cond = norms * 2 * d  # affine LayerNorms
        block = attn + mlp + cond + (attn if self.family == "cross-attention" else 0)
        by_module = {
            "x_embedder": self.patch_dim * d + d,
            "t_embedder": FREQUENCY_DIM * d + d + d * d + d,
            "y_embedder": self.text_dim * d + d,
            "blocks": self.depth * block,
            "final_layer": (2 * d * d + 2 * d if self.adaln else 2 * d)
            + d * self.patch_dim
            + self.patch_dim,
        }
        return ParamCount(sum(by_module.values()), by_module["blocks"], by_module)

    # -- FLOPs --------------------------------------------------------------------------------

    def flops_per_sample(self) -> FlopCount:
        """Exact training FLOPs (forward + backward) of one sample; see the module docstring."""
        d, m, T, L = self.width, self.mlp_hidden, self.image_tokens, self.text_length
        S = self.sequence_length
        # (forward FLOPs, whether the matmul's input needs a gradient)
        mm: list[tuple[int, bool]] = [
            (2 * T * self.patch_dim * d, False),  # patch embedding
            (2 * FREQUENCY_DIM * d, False),  # timestep MLP, layer 1
            (2 * d * d, True),  # timestep MLP, layer 2
            (2 * L * self.text_dim * d, False),  # text projection
            (2 * T * d * self.patch_dim, True),  # final linear
        ]
        if self.adaln:
            mm.append((2 * d * 2 * d, True))  # final adaLN
        attention_fwd = 0
        for _ in range(self.depth):
            mm.append((2 * S * d * 3 * d + 2 * S * d * d, True))  # qkv + out projection
            mm.append((2 * 2 * S * d * m, True))  # MLP
            attention_fwd += 4 * S * S * d
            if self.adaln:
                mm.append((2 * d * 6 * d, True))  # adaLN, once per sample
            if self.family == "cross-attention":
                mm.append((2 * S * d * d + 2 * S * d * d, True))  # q + out projection
                mm.append((2 * L * d * 2 * d, True))  # k, v on text tokens only
                attention_fwd += 4 * S * L * d
        forward = sum(f for f, _ in mm) + attention_fwd
        backward = sum(2 * f if grad else f for f, grad in mm) + 2 * attention_fwd
        return FlopCount(forward=forward, backward=backward, attention=3 * attention_fwd)


ModelConfig = DiTConfig | ClassConfig  # a built-in DiT, or a class family's rung


def model_config(data: dict[str, Any]) -> ModelConfig:
    """A model's config from its dict (a saved TrainConfig's): a class family's has its class."""
    if "transformer" in data:
        return ClassConfig(**data)
    return DiTConfig(**data)


Schedule = Literal["constant", "cosine", "wsd"]
DecayShape = Literal["linear", "1-sqrt"]
Precision = Literal["bf16", "fp16", "fp32"]


def decay_start(steps: int, decay_fraction: float) -> int:
    """The first step of a WSD schedule's cooldown (at least one step long): where a cooldown
    branch starts from its stable run."""
    return steps - max(round(decay_fraction * steps), 1)


COMPILE_MODES = (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass(frozen=True)
class TrainConfig:
    """Everything one trial's trainer needs; saved, resolved, in every checkpoint and result."""

    model: ModelConfig
    steps: int
    global_batch_size: int
    micro_batch_size: int | None = None  # per process; None: the whole per-process share
    learning_rate: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.0
    warmup_steps: int = 0
    schedule: Schedule = "constant"
    decay_fraction: float = 0.2  # the cooldown of wsd
    decay_shape: DecayShape = "linear"  # the cooldown's shape: to zero linearly, or 1 - sqrt
    grad_clip: float = 1.0
    ema_decay: float = 0.0  # evaluate an EMA of the weights (0: off)
    precision: Precision = "bf16"  # on GPU; CPU runs in fp32
    compile: bool = False
    # torch.compile's mode: None (its default), reduce-overhead (CUDA graphs: small models are
    # bound by kernel launches), max-autotune, max-autotune-no-cudagraphs
    compile_mode: str | None = None
    compile_cache: str | None = None  # folder or s3:// prefix: compiled kernels shared by trials
    # keep the residual stream in the autocast dtype (GPU) rather than fp32: faster, less exact
    low_precision_residual: bool = False
    fsdp: bool = False
    seed: int = 0
    timestep_sampling: Literal["uniform", "logit-normal"] = "uniform"
    text_dropout: float = 0.1
    data: str = "procedural://shapes"
    validation_data: str | None = None
    eval_samples: int = 256
    eval_timesteps: int = 4  # fixed (t, noise) pairs per validation sample
    likelihood_samples: int = 0
    likelihood_steps: int = 32  # ODE steps of the likelihood integral
    fid_samples: int = 0
    fid_steps: int = 25  # sampling steps
    fid_guidance: float = 1.5  # classifier-free guidance scale
    fid_features: str = "inception"  # clip-vit-b-32 ..., random-conv, or a network file
    fid_weights: str | None = None  # local weights of the feature network
    vae: str | None = None  # decoder for FID; default: the VAE the data's index records
    checkpoint: str | None = None  # folder, file:// or s3:// prefix
    checkpoint_every: int = 0  # steps; 0: only on SIGTERM
    # WSD branches: a stable (constant-rate) run keeps a checkpoint at each of these steps, kept
    # beside its rolling one; a cooldown trial starts from one of them (`branch_from`, the
    # parent's checkpoint location, at `branch_step`) unless it has a checkpoint of its own
    branch_points: tuple[int, ...] = ()
    branch_from: str | None = None
    branch_step: int = 0
    results: str | None = None  # result JSON path
    progress: str | None = None  # a small JSON file (step, loss) rewritten as training goes
    termination_log: str | None = "/dev/termination-log"
    metrics_port: int | None = None
    metrics_address: str = "0.0.0.0"  # all interfaces in a pod, for the scraper; 127.0.0.1 in tests
    metrics_linger_seconds: float = 0.0
    sweep: str = ""
    trial: str = ""
    budget: float = 0.0
    # MLflow (components.tracking): the server, the sweep's experiment, the budget's parent run,
    # and the tags that find this trial's run again (isoflop.key: the sweep's uid and the trial)
    tracking_uri: str | None = None
    tracking_experiment: str | None = None
    tracking_parent: str | None = None
    tracking_tags: dict[str, str] = field(default_factory=dict, hash=False)
    tracking_params: dict[str, str] = field(default_factory=dict, hash=False)  # beside its own
    tracking_flush_seconds: float = 10.0  # the longest a trial's end waits for the tracker
    divergence_factor: float = 10.0  # loss above this many times its best EMA: diverged
    log_every: int = 10
    num_workers: int = 0
    peak_flops: float | None = None  # per device, for MFU; None: known GPUs, else unreported

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if self.global_batch_size < 1:
            raise ValueError(f"global_batch_size must be at least 1, got {self.global_batch_size}")
        if self.micro_batch_size is not None and self.micro_batch_size < 1:
            raise ValueError(f"micro_batch_size must be at least 1, got {self.micro_batch_size}")
        if self.log_every < 1:
            raise ValueError(f"log_every must be at least 1, got {self.log_every}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must lie in [0, 1), got {self.ema_decay}")
        if self.ema_decay and self.fsdp:
            raise ValueError("ema_decay is not supported with fsdp: its average is not sharded")
        if self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be 0 or more, got {self.checkpoint_every}")
        if any(not 0 < b <= self.steps for b in self.branch_points):
            raise ValueError(f"branch_points must lie in 1..steps ({self.steps})")
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(
                f"compile_mode must be one of {', '.join(str(m) for m in COMPILE_MODES)}, "
                f"got {self.compile_mode!r}"
            )
        if self.decay_shape not in ("linear", "1-sqrt"):
            raise ValueError(f"decay_shape must be linear or 1-sqrt, got {self.decay_shape!r}")
        if self.branch_points and not self.checkpoint:
            raise ValueError("branch_points need a checkpoint location to keep them in")
        if self.low_precision_residual and isinstance(self.model, ClassConfig):
            raise ValueError(
                "low_precision_residual is the built-in DiT's; a class family's "
                "model keeps its own residual stream"
            )
        if self.tracking_uri and not self.tracking_experiment:
            raise ValueError("tracking_uri needs tracking_experiment: the run's experiment")
        if self.tracking_flush_seconds < 0:
            raise ValueError(
                f"tracking_flush_seconds must be 0 or more, got {self.tracking_flush_seconds}"
            )
        if self.branch_from is not None and not 0 < self.branch_step < self.steps:
            raise ValueError(f"branch_step must lie in 1..steps-1 ({self.steps - 1})")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        fields = dict(data)
        fields["model"] = model_config(fields["model"])
        if "betas" in fields:
            fields["betas"] = tuple(fields["betas"])
        if "branch_points" in fields:
            fields["branch_points"] = tuple(fields["branch_points"])
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ValueError(f"unknown training settings: {', '.join(unknown)}")
        return cls(**fields)

    def lr_multiplier(self, step: int) -> float:
        """Learning-rate factor at a step: linear warmup, then constant, cosine or WSD."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.schedule == "constant":
            return 1.0
        if self.schedule == "cosine":
            span = max(self.steps - self.warmup_steps, 1)
            progress = min((step - self.warmup_steps) / span, 1.0)
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        start = decay_start(self.steps, self.decay_fraction)
        if step < start:
            return 1.0
        progress = min((step - start + 1) / (self.steps - start), 1.0)
        if self.decay_shape == "1-sqrt":
            return 1.0 - math.sqrt(progress)
        return 1.0 - progress
