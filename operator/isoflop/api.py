"""The ScalingSweep API: the one definition of spec and status (the CRD is generated from it)."""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from isoflop_trainer.config import Family, FlopsAccounting, TimestepConditioning

GROUP = "isoflop.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ScalingSweep"
PLURAL = "scalingsweeps"
SINGULAR = "scalingsweep"
SHORT_NAMES = ["sweep", "sweeps"]  # kubectl get sweep(s): it never pluralizes a short name

# Kubernetes quantity ("8", "500m", "64Gi") and DNS-1123 label patterns.
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
NAME_MAX_LENGTH = 40  # a sweep's name, with a trial's ID, must fit a Job name and a label value
NAME_RULE = (
    f"must be a DNS label (lower-case letters, digits and '-', starting and ending with a letter "
    f"or digit) of at most {NAME_MAX_LENGTH} characters"
)
DATA_URI_PATTERN = r"^(procedural|s3|file)://.*$"

# A CEL transition rule: the API server refuses changes to fields that define the sweep.
Immutable: dict[str, JsonValue] = {
    "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "is immutable"}]
}


class ManifestError(ValueError):
    """A manifest the user wrote is invalid; the message is one sentence naming the field."""


class Model(BaseModel):
    """Base: camelCase on the wire, snake_case in Python, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )

    def to_wire(self) -> dict[str, Any]:
        """JSON-ready dict with camelCase keys, unset optionals left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class SpecModel(Model):
    """What a user writes: validated as strictly as the API server validates it (no "4" for 4,
    no "true" for true, no snake_case keys: parse_sweep reads aliases only)."""

    model_config = ConfigDict(strict=True)

    @model_validator(mode="before")
    @classmethod
    def _whole_numbers(cls, data: Any) -> Any:
        # JSON has one number type: the API server takes 4.0 for an integer, and so do we
        if not isinstance(data, Mapping):
            return data
        out = dict(data)
        for name, field in cls.model_fields.items():
            key = field.alias or name
            if key in out and _integer_kind(field.annotation) == "int":
                out[key] = _whole(out[key])
            elif (
                key in out
                and _integer_kind(field.annotation) == "list"
                and isinstance(out[key], list)
            ):
                out[key] = [_whole(v) for v in out[key]]
        return out


def _whole(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _integer_kind(annotation: Any) -> str | None:
    """'int' for int and int | None, 'list' for a list of ints, else None."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is int:
        return "int"
    if origin is Annotated:
        return _integer_kind(args[0])
    if origin in (typing.Union, types.UnionType):
        return "int" if int in args else None
    if origin is list and args:
        return "list" if _integer_kind(args[0]) == "int" else None
    return None


# ------------------------------------------------------------------------------------------------
# spec


class RungSpec(SpecModel):
    """An explicit ladder rung: one model size."""

    name: str = Field(
        pattern=DNS_LABEL_PATTERN, max_length=20, description="Rung name, used in trial IDs."
    )
    depth: int = Field(ge=1, le=128)
    width: int = Field(ge=8, le=16384)
    heads: int | None = Field(default=None, ge=1, description="Default: width / headDim.")
    learning_rate: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="This rung's learning rate. Default: training.learningRate, scaled by "
        "training.learningRateScaling.",
    )


class ModelSpec(SpecModel):
    """The model family and the ladder of sizes every budget is swept over."""

    family: Family = Field(
        default="in-context",
        description="in-context: text and image tokens share self-attention; "
        "cross-attention: text enters each block through cross-attention.",
        json_schema_extra=Immutable,
    )
    depths: list[Annotated[int, Field(ge=1, le=128)]] = Field(
        default_factory=list,
        max_length=64,
        description="Depth ladder; width = widthPerDepth x depth.",
    )
    width_per_depth: int = Field(
        default=64, ge=1, le=1024, description="The width rule: width = widthPerDepth x depth."
    )
    head_dim: int = Field(default=64, ge=8, le=512)
    mlp_ratio: float = Field(default=4.0, gt=0, le=16)
    patch_size: int = Field(default=2, ge=1, le=16)
    timestep_conditioning: TimestepConditioning = Field(
        default="adaln-zero", description="adaln-zero, or the timestep as an in-context token."
    )
    qk_norm: bool = False
    configs: list[RungSpec] = Field(
        default_factory=list, max_length=64, description="Explicit rungs, instead of depths."
    )

    @field_validator("depths")
    @classmethod
    def _depths(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError("depths must not repeat")
        return v

    @model_validator(mode="after")
    def _ladder(self) -> ModelSpec:
        if bool(self.depths) == bool(self.configs):
            raise ValueError("give exactly one of depths or configs")
        names = [c.name for c in self.configs]
        if len(set(names)) != len(names):
            raise ValueError("configs names must be unique")
        for depth in self.depths:
            width = self.width_per_depth * depth
            if width % self.head_dim:
                raise ValueError(
                    f"depth {depth} gives width {width} (widthPerDepth x depth), "
                    f"not a multiple of headDim {self.head_dim}"
                )
        for c in self.configs:
            heads = c.heads or c.width // self.head_dim
            if heads < 1 or c.width % heads:
                raise ValueError(
                    f"configs '{c.name}': width {c.width} does not split into {heads} heads"
                )
        return self


def _check_shape(v: list[int]) -> list[int]:
    if len(v) != 3 or any(x < 1 for x in v):
        raise ValueError("latentShape must be three positive integers [channels, height, width]")
    return v


class DataSpec(SpecModel):
    """Where training and validation data come from, and their shapes."""

    model_config = ConfigDict(json_schema_extra=Immutable)

    source: str = Field(
        default="procedural://shapes",
        pattern=DATA_URI_PATTERN,
        max_length=2048,
        description="procedural://NAME (generated), s3://bucket/prefix or file:///path "
        "(pre-encoded shards).",
    )
    validation_source: str | None = Field(
        default=None,
        pattern=DATA_URI_PATTERN,
        max_length=2048,
        description="Default: the held-out split of source.",
    )
    latent_shape: Annotated[list[int], AfterValidator(_check_shape)] = Field(
        default_factory=lambda: [4, 32, 32],
        min_length=3,
        max_length=3,
        description="[channels, height, width] of the image latents.",
    )
    text_length: int = Field(default=77, ge=1, le=1024, description="Text tokens per caption.")
    text_dim: int = Field(default=768, ge=1, le=16384, description="Text embedding width.")


def _unique(v: list[float]) -> list[float]:
    if len(set(v)) != len(v):
        raise ValueError("must not repeat a value")
    return v


Flops = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class TrainingSpec(SpecModel):
    """Optimisation settings shared by every trial."""

    global_batch_size: int = Field(default=1024, ge=1, le=1 << 20)
    micro_batch_size: int | None = Field(
        default=None,
        ge=1,
        description="Per-GPU micro-batch; the rest is gradient accumulation. Default: automatic.",
    )
    learning_rate: float = Field(default=1e-4, gt=0, le=1)
    betas: list[float] = Field(default_factory=lambda: [0.9, 0.95], min_length=2, max_length=2)
    weight_decay: float = Field(default=0.0, ge=0, le=1)
    warmup_fraction: float = Field(
        default=0.05, ge=0, le=0.5, description="Warmup as a fraction of a trial's steps."
    )
    schedule: Literal["constant", "cosine", "wsd"] = "constant"
    decay_fraction: float = Field(default=0.2, ge=0, le=1, description="Cooldown fraction for wsd.")
    precision: Literal["bf16", "fp16", "fp32"] = "bf16"
    compile: bool = Field(default=True, description="torch.compile the model (GPU).")
    compile_mode: (
        Literal["auto", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]
        | None
    ) = Field(
        default=None,
        description="torch.compile's mode; unset: its default. reduce-overhead captures CUDA "
        "graphs, for small rungs bound by kernel launches; auto: reduce-overhead for rungs whose "
        "MFU alone is under 20% on the trainer's H100 curve, the default above.",
    )
    seed: int = Field(
        default=0, ge=0, le=2**53 - 1, description="At most 2^53 - 1, exact in any JSON client."
    )
    replicates: int = Field(
        default=1,
        ge=1,
        le=16,
        description="Seeds per trial (seed, seed+1, ...): their spread measures the noise that "
        "every interval rests on.",
    )
    timestep_sampling: Literal["uniform", "logit-normal"] = "uniform"
    text_dropout: float = Field(
        default=0.1, ge=0, lt=1, description="Caption dropout for guidance."
    )
    grad_clip: float = Field(default=1.0, ge=0)
    ema_decay: float = Field(
        default=0.0,
        ge=0,
        lt=1,
        description="Evaluate an exponential moving average of the weights with this decay per "
        "step (e.g. 0.999); 0: the trained weights themselves.",
    )
    learning_rate_scaling: Literal["none", "width"] = Field(
        default="none",
        description="none: learningRate for every rung. width: learningRate x baseWidth / width, "
        "the 1/width rule for Adam that keeps updates alike across widths.",
    )
    base_width: int | None = Field(
        default=None,
        ge=1,
        description="The width at which learningRate holds under width scaling. Default: the "
        "narrowest rung.",
    )
    eval_samples: int = Field(
        default=512, ge=1, le=1 << 20, description="Validation samples at the end."
    )
    min_steps: int = Field(default=100, ge=1, description="Trials with fewer steps are infeasible.")
    data_workers: int = Field(
        default=0,
        ge=0,
        le=64,
        description="Data-loading worker processes per training process (0: load in the training "
        "process). Results do not depend on it; on GPUs, 2-4 keep procedural or S3 data ahead.",
    )

    @field_validator("betas")
    @classmethod
    def _betas(cls, v: list[float]) -> list[float]:
        if not all(0 <= b < 1 for b in v):
            raise ValueError("betas must lie in [0, 1)")
        return v


# Free-form Kubernetes fields are typed after core/v1 (bounded depth) and bounded in size: a
# manifest the API server stores can neither nest deep enough to break a JSON decoder nor grow
# without limit.
LabelKey = Annotated[str, Field(min_length=1, max_length=317)]  # prefix (253) / name (63)
LabelValue = Annotated[str, Field(max_length=63)]
Name = Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)]
Values = Annotated[list[LabelValue], Field(max_length=64)]


class Toleration(SpecModel):
    key: LabelKey | None = None
    operator: Literal["Exists", "Equal"] = "Equal"
    value: LabelValue | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


class NodeSelectorRequirement(SpecModel):
    key: LabelKey
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]
    values: Values = Field(default_factory=list)


class NodeSelectorTerm(SpecModel):
    match_expressions: list[NodeSelectorRequirement] = Field(default_factory=list, max_length=16)
    match_fields: list[NodeSelectorRequirement] = Field(default_factory=list, max_length=16)


class NodeSelector(SpecModel):
    node_selector_terms: list[NodeSelectorTerm] = Field(min_length=1, max_length=16)


class PreferredSchedulingTerm(SpecModel):
    weight: int = Field(ge=1, le=100)
    preference: NodeSelectorTerm


class NodeAffinity(SpecModel):
    required_during_scheduling_ignored_during_execution: NodeSelector | None = None
    preferred_during_scheduling_ignored_during_execution: list[PreferredSchedulingTerm] = Field(
        default_factory=list, max_length=16
    )


class LabelSelectorRequirement(SpecModel):
    key: LabelKey
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: Values = Field(default_factory=list)


class LabelSelector(SpecModel):
    match_labels: dict[LabelKey, LabelValue] = Field(default_factory=dict, max_length=32)
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list, max_length=16)


class PodAffinityTerm(SpecModel):
    topology_key: LabelKey
    label_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    namespaces: list[Name] = Field(default_factory=list, max_length=64)
    match_label_keys: list[LabelKey] = Field(default_factory=list, max_length=16)
    mismatch_label_keys: list[LabelKey] = Field(default_factory=list, max_length=16)


class WeightedPodAffinityTerm(SpecModel):
    weight: int = Field(ge=1, le=100)
    pod_affinity_term: PodAffinityTerm


class PodAffinity(SpecModel):
    required_during_scheduling_ignored_during_execution: list[PodAffinityTerm] = Field(
        default_factory=list, max_length=16
    )
    preferred_during_scheduling_ignored_during_execution: list[WeightedPodAffinityTerm] = Field(
        default_factory=list, max_length=16
    )


class Affinity(SpecModel):
    """core/v1 Affinity: where a trial's pods may be scheduled."""

    node_affinity: NodeAffinity | None = None
    pod_affinity: PodAffinity | None = None
    pod_anti_affinity: PodAffinity | None = None


class PackingSpec(SpecModel):
    """Several small trials on one GPU: a rung whose trial alone would leave a GPU mostly idle
    trains on 1/k of one GPU (k = floor(saturationMfu / its MFU alone), at most maxTrialsPerGpu,
    as many as fit the GPU's memory) instead of gpusPerNode x nodes GPUs; larger rungs train as
    before. A packed trial counts as 1/(k x gpusPerNode x nodes) of `parallelism`."""

    max_trials_per_gpu: int = Field(default=8, ge=1, le=64, description="1: never packed.")
    saturation_mfu: float = Field(
        default=0.40, gt=0, le=1, description="The MFU a busy GPU reaches (large rungs alone)."
    )
    shared_gpu_resource: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$",
        max_length=253,
        description="On a cluster: the resource a GPU-sharing device plugin advertises (NVIDIA "
        "time-slicing or MPS, e.g. nvidia.com/gpu.shared), which packed trials request in place "
        "of whole GPUs. Required there; `isoflop run` shares its GPUs itself.",
    )
    replicas_per_gpu: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description="How many of sharedGpuResource the plugin advertises per GPU: a trial packed "
        "k to a GPU requests ceil(replicas / k) of them, so no GPU takes more than k.",
    )

    @model_validator(mode="after")
    def _resource_and_replicas_together(self) -> PackingSpec:
        if (self.shared_gpu_resource is None) != (self.replicas_per_gpu is None):
            raise ValueError("sharedGpuResource and replicasPerGpu go together")
        return self


class ResourcesSpec(SpecModel):
    """What one trial gets on Kubernetes (the local runner uses GPUs it finds)."""

    image: str = Field(default="ghcr.io/isoflop/trainer:0.1.0", min_length=1, max_length=1024)
    gpus_per_node: int = Field(default=1, ge=0, le=64)
    packing: PackingSpec | None = Field(
        default=None, description="Unset: every trial has its GPUs to itself."
    )
    gpu_memory_gib: float = Field(
        default=80,
        alias="gpuMemoryGiB",
        gt=0,
        le=4096,
        description="Memory of one GPU: sets the automatic micro-batch and how many packed "
        "trials fit.",
    )
    nodes: int = Field(default=1, ge=1, le=1024)
    cpu: str = Field(default="8", pattern=QUANTITY_PATTERN, max_length=32)
    memory: str = Field(default="64Gi", pattern=QUANTITY_PATTERN, max_length=32)
    node_selector: dict[LabelKey, LabelValue] = Field(default_factory=dict, max_length=32)
    tolerations: list[Toleration] = Field(default_factory=list, max_length=32)
    affinity: Affinity | None = None
    priority_class_name: Name | None = None
    image_pull_secrets: list[Name] = Field(default_factory=list, max_length=16)
    service_account_name: Name | None = None
    s3_credentials_secret: Name | None = Field(
        default=None,
        description="Secret with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY for s3:// data.",
    )
    max_runtime_seconds: int = Field(
        default=7 * 24 * 3600,
        ge=60,
        le=365 * 24 * 3600,
        description="A trial still running after this long, retries included, fails (its Job's "
        "activeDeadlineSeconds).",
    )
    finished_ttl_seconds: int = Field(
        default=24 * 3600,
        ge=0,
        le=365 * 24 * 3600,
        description="Finished trial Jobs and their pods are deleted this long after they end; "
        "their results stay in the trial records.",
    )


class StorageSpec(SpecModel):
    """Where trials keep checkpoints on a cluster (the local runner uses its run directory)."""

    checkpoints: str | None = Field(
        default=None,
        pattern=r"^(s3|file)://.+",
        max_length=2048,
        description="s3://bucket/prefix (or file:// on a shared volume); each trial writes "
        "PREFIX/SWEEP/TRIAL/. Unset: checkpoints live in the pod and are lost with it.",
    )
    shared_memory: str = Field(
        default="16Gi",
        pattern=QUANTITY_PATTERN,
        description="Size of the memory-backed /dev/shm of trial pods.",
    )


class RetrySpec(SpecModel):
    per_trial: int = Field(default=2, ge=0, le=100, description="Retries of one failed trial.")
    max_failed_trials: int = Field(
        default=3, ge=0, description="Trials that may fail for good before the sweep fails."
    )


class AdaptiveSpec(SpecModel):
    """An adaptive ladder: the smallest budgets train every rung; each later budget trains the
    rungs nearest the N* that the laws fitted on the budgets before it predict, and widens one
    rung at a time until its loss minimum is bracketed or the ladder ends."""

    seed_budgets: int = Field(
        default=2, ge=2, le=64, description="The smallest budgets, trained over the whole ladder."
    )
    rungs: int = Field(
        default=5,
        ge=3,
        le=64,
        description="Rungs per later budget around its predicted optimum, before widening.",
    )
    stride: int = Field(
        default=3,
        ge=1,
        le=64,
        description="Ladder steps between the chosen rungs (fewer where the ladder is too short): "
        "a wide span pins a flat curve's minimum far better than adjacent rungs.",
    )


class WsdBranchesSpec(SpecModel):
    """Warmup-stable-decay branches: each rung trains once at a constant learning rate, keeping a
    checkpoint where each budget's trial of that rung starts its cooldown; each trial is that
    cooldown alone, branched from the checkpoint (the shared prefix is paid for once)."""

    cooldown: float = Field(
        default=0.2, gt=0, lt=1, description="A branch's cooldown as a fraction of its steps."
    )
    decay_shape: Literal["linear", "1-sqrt"] = Field(
        default="linear",
        description="The cooldown's learning-rate shape: linear to zero, or 1 - sqrt(progress) "
        "(Hägele et al., 2024).",
    )


class StrategySpec(SpecModel):
    """How the grid is trained; unset: every (budget, rung) from scratch. Both may be combined."""

    adaptive: AdaptiveSpec | None = None
    wsd_branches: WsdBranchesSpec | None = None


class MetricsSpec(SpecModel):
    prometheus_url: str | None = Field(
        default=None,
        pattern=r"^https?://.+",
        description="Unset: results come from the termination message.",
    )
    query_timeout_seconds: float = Field(default=10, gt=0, le=300)
    lookback: str = Field(
        default="1h",
        pattern=r"^[0-9]+[smhd]$",
        description="Range searched for a trial's last sample.",
    )


def _resamples(value: int) -> int:
    if 0 < value < 100:
        raise ValueError(f"{value} resamples are too few for an interval's tails; use 0 or 100+")
    return value


class FitSpec(SpecModel):
    method: Literal["parabola", "parametric", "both"] = "both"
    bootstrap: Annotated[int, AfterValidator(_resamples)] = Field(
        default=1000,
        ge=0,
        le=100000,
        description="Bootstrap resamples for intervals: 0 (none) or 100 or more.",
        # the same rule in the CRD: the API server refuses what the operator would
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self == 0 || self >= 100",
                    "message": "too few resamples for an interval's tails; use 0 or 100+",
                }
            ]
        },
    )
    window: float | None = Field(
        default=0.02,
        gt=0,
        le=1,
        description="Each isoFLOP parabola is fitted on a kernel around its minimum that reaches "
        "where the loss has risen this fraction above it; null fits every rung alike.",
    )
    seed: int = Field(default=0, ge=0)
    predict: list[Flops] = Field(
        default_factory=list, max_length=32, description="Budgets (FLOPs) to predict."
    )
    hold_out_budget: float | None = Field(
        default=None, gt=0, description="A budget to leave out of the fit and predict, as a check."
    )


FEATURES_PATTERN = r"^(inception|clip-[a-z0-9-]+|random-conv(:[0-9]+)?|/.+)$"


class FidSpec(SpecModel):
    """FID at the end of every trial: generated against validation images, both decoded by the
    dataset's VAE, through a standard feature network."""

    samples: int = Field(
        default=0, ge=0, le=1 << 20, description="Images generated per trial; 0: no FID."
    )
    steps: int = Field(default=25, ge=1, le=1000, description="Sampling steps (Euler).")
    guidance: float = Field(default=1.5, ge=0, le=50, description="Classifier-free guidance.")
    features: str = Field(
        default="inception",
        pattern=FEATURES_PATTERN,
        max_length=1024,
        description="inception (Inception-v3 pool features), a CLIP model as the paper "
        "(clip-vit-b-32, clip-vit-l-14, ...), random-conv (smoke tests) or a network file's "
        "absolute path.",
    )
    weights: str | None = Field(
        default=None,
        max_length=1024,
        description="Local path of the feature network's weights in the trainer (nothing is "
        "downloaded while training). Default: torch's hub cache.",
    )
    vae: str | None = Field(
        default=None,
        max_length=1024,
        description="The VAE that decodes latents to images. Default: the one the dataset's "
        "index records; none for procedural data (its latents are images).",
    )


class LikelihoodSpec(SpecModel):
    samples: int = Field(
        default=0, ge=0, le=1 << 20, description="Validation samples for bits/dim; 0: none."
    )
    steps: int = Field(default=32, ge=2, le=1000, description="ODE steps of the integral.")


class EvaluationSpec(SpecModel):
    """The paper's metrics beside the validation loss; each gets its law when asked for."""

    fid: FidSpec = Field(default_factory=FidSpec)
    likelihood: LikelihoodSpec = Field(default_factory=LikelihoodSpec)


MAX_TRIALS = 4096  # budgets x rungs x replicates: the largest sweep one resource may hold
_TRIALS_CEL = (
    "size(self.budgets) * (size(self.model.depths) + size(self.model.configs))"
    " * (has(self.training) && has(self.training.replicates) ? self.training.replicates : 1)"
)


class ScalingSweepSpec(SpecModel):
    """What to sweep and how to train it."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": f"{_TRIALS_CEL} <= {MAX_TRIALS}",
                    "message": f"budgets x rungs x training.replicates must be at most "
                    f"{MAX_TRIALS} trials; split the sweep",
                }
            ]
        }
    )

    model: ModelSpec
    data: DataSpec = Field(default_factory=DataSpec)
    budgets: Annotated[list[Flops], AfterValidator(_unique)] = Field(
        min_length=1, max_length=64, description="Compute budgets in FLOPs."
    )
    flops_accounting: FlopsAccounting = Field(
        default="exact",
        description="exact: per-architecture FLOPs; 6ND: the paper's C = 6 N D.",
        json_schema_extra=Immutable,
    )
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    parallelism: int = Field(default=4, ge=1, le=10000, description="Trials running at once.")
    retries: RetrySpec = Field(default_factory=RetrySpec)
    storage: StorageSpec = Field(default_factory=StorageSpec)
    metrics: MetricsSpec = Field(default_factory=MetricsSpec)
    fit: FitSpec = Field(default_factory=FitSpec)
    strategy: StrategySpec = Field(default_factory=StrategySpec)

    @model_validator(mode="after")
    def _cross_fields(self) -> ScalingSweepSpec:
        _, height, width = self.data.latent_shape
        p = self.model.patch_size
        if height % p or width % p:
            raise ValueError(
                f"data.latentShape {height}x{width} is not divisible by model.patchSize {p}"
            )
        rungs = len(self.model.depths) + len(self.model.configs)
        trials = len(self.budgets) * rungs * self.training.replicates
        if trials > MAX_TRIALS:
            raise ValueError(
                f"budgets x rungs x training.replicates is {trials} trials, more than "
                f"{MAX_TRIALS}; split the sweep"
            )
        held = self.fit.hold_out_budget
        if held is not None and held not in self.budgets:
            raise ValueError(f"fit.holdOutBudget {held:g} is not one of budgets")
        if self.strategy.wsd_branches is not None and self.training.schedule == "cosine":
            raise ValueError(
                "strategy.wsdBranches trains every trial as a WSD cooldown; training.schedule "
                "cosine contradicts it (leave it unset or say wsd)"
            )
        seeds = self.strategy.adaptive.seed_budgets if self.strategy.adaptive else 0
        if seeds > len(self.budgets):
            raise ValueError(
                f"strategy.adaptive.seedBudgets is {seeds}, more than the {len(self.budgets)} "
                "budgets"
            )
        return self


# ------------------------------------------------------------------------------------------------
# status

Phase = Literal["Pending", "Running", "Fitting", "Succeeded", "Failed"]
TrialPhase = Literal[
    "Pending", "Running", "Succeeded", "Failed", "Cancelled", "Infeasible", "Skipped"
]
ResultSource = Literal["prometheus", "termination-message", "results-file", "simulated"]


class Condition(Model):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = ""
    message: str = ""
    last_transition_time: str = ""


class TrialRecord(Model):
    """A compact per-trial record (hundreds of trials must fit far under etcd's object limit)."""

    id: str
    phase: TrialPhase
    params: int
    tokens: int
    attempts: int = 0
    loss: float | None = None
    source: ResultSource | None = None
    metrics: dict[str, float] | None = Field(
        default=None, description="fid, bpd, loss_se: what the trial measured beside its loss."
    )
    error: str | None = Field(default=None, description="Why a failed trial failed, in short.")
    kind: Literal["stable", "branch"] | None = Field(
        default=None,
        description="branch: a trial trained as a WSD cooldown from a stable run's checkpoint; "
        "stable: a segment of a rung's constant-rate run (not a point of the fit); unset: a "
        "trial trained from scratch.",
    )
    branched_from: str | None = Field(
        default=None, description="The stable segment whose last checkpoint it starts from."
    )
    branch_step: int | None = None


class BudgetSummary(Model):
    """One budget's trials at a glance: the status stays small at any sweep size (the per-trial
    records live in the ConfigMap named by `records` on a cluster, in status.json locally)."""

    budget: float
    trials: int = Field(description="Planned trials (infeasible ones not counted).")
    succeeded: int = 0
    failed: int = 0
    running: int = 0
    pending: int = 0
    infeasible: int = 0
    skipped: int = 0
    best_trial: str | None = Field(default=None, description="The trial of lowest loss so far.")
    best_loss: float | None = None
    records: str | None = Field(
        default=None, description="The ConfigMap with this budget's per-trial records."
    )


class TrialCounts(Model):
    total: int = 0
    pending: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    infeasible: int = 0
    skipped: int = Field(default=0, description="Trials the adaptive ladder left out.")


class Interval(Model):
    low: float
    high: float


class BudgetFit(Model):
    """The isoFLOP parabola of one budget: loss = a*x^2 + b*x + c with x = log10(N)."""

    budget: float
    points: int
    a: float
    b: float
    c: float
    params_opt: float | None = None  # None when the loss does not curve upward
    tokens_opt: float | None = None
    loss_opt: float | None = None
    bracketed: bool
    advice: str | None = None
    params_opt_interval: Interval | None = None
    loss_opt_interval: Interval | None = None
    bracketed_fraction: float | None = Field(
        default=None, description="Share of resamples whose minimum stays inside the ladder."
    )


class PowerLaw(Model):
    """y = coefficient * x^exponent, x the budget C (or the loss, for metric-vs-loss laws)."""

    coefficient: float
    exponent: float
    points: int
    coefficient_interval: Interval | None = None
    exponent_interval: Interval | None = None


class SaturatingLaw(Model):
    """y = irreducible + coefficient * C^-decay."""

    irreducible: float
    coefficient: float
    decay: float
    irreducible_interval: Interval | None = None
    decay_interval: Interval | None = None


class Laws(Model):
    params: PowerLaw | None = None
    tokens: PowerLaw | None = None
    loss: PowerLaw | None = None
    loss_saturating: SaturatingLaw | None = None
    metrics: dict[str, PowerLaw] = Field(default_factory=dict, description="Metric at N* vs C.")
    metrics_vs_loss: dict[str, PowerLaw] = Field(default_factory=dict)


class ParametricLaw(Model):
    """Chinchilla Approach 3: L(N, D) = E + A / N^alpha + B / D^beta."""

    E: float = Field(alias="E")
    A: float = Field(alias="A")
    B: float = Field(alias="B")
    alpha: float
    beta: float
    params_exponent: float
    tokens_exponent: float
    params_exponent_interval: Interval | None = None
    tokens_exponent_interval: Interval | None = None
    intervals: dict[str, Interval] = Field(
        default_factory=dict, description="E, A, B, alpha, beta where identified."
    )
    at_bound: list[str] = Field(
        default_factory=list, description="Parameters on an optimizer bound: not identified."
    )


class Estimate(Model):
    """A prediction: the confidence interval says where the law lies, the prediction interval
    where a new measurement would fall."""

    value: float
    confidence: Interval | None = None
    prediction: Interval | None = None


class Prediction(Model):
    budget: float
    params: Estimate | None = None
    tokens: Estimate | None = None
    loss: Estimate | None = None
    metrics: dict[str, Estimate] = Field(default_factory=dict)
    parametric_params: float | None = None
    parametric_loss: float | None = None


class HoldOutCheck(Model):
    """The largest (or chosen) budget left out of the fit, predicted, and compared."""

    budget: float
    params_error: float
    loss_error: float
    within_prediction_interval: bool | None = None  # None: no interval to compare with
    params_within: bool | None = None  # N* alone
    loss_within: bool | None = None  # L* alone (a loss with a floor bends away from a power law)


class NoiseEstimate(Model):
    """How much one trial's loss scatters: the noise model behind every interval."""

    relative: float | None = None  # sd of log loss; None: not identified
    dof: float | None = None  # None: known exactly (given or measured)
    source: Literal["given", "measured", "replicates", "residuals", "none"] = "none"


class FitResult(Model):
    """Everything fitted from a sweep's results: the same on the resource and in `isoflop fit`."""

    noise: NoiseEstimate | None = None
    not_identified: list[str] = Field(
        default_factory=list, description="Quantities whose interval the design cannot give."
    )
    methods_agree: bool | None = Field(
        default=None, description="Parabola and parametric N* exponent intervals overlap."
    )
    budget_fits: list[BudgetFit] = Field(default_factory=list)
    laws: Laws = Field(default_factory=Laws)
    parametric: ParametricLaw | None = None
    predictions: list[Prediction] = Field(default_factory=list)
    hold_out: HoldOutCheck | None = None
    warnings: list[str] = Field(default_factory=list)


class DataStatus(Model):
    """What the check before launch found of the sweep's data (shards only)."""

    ready: bool | None = Field(
        default=None,
        description="true: checked and fits; false: missing or mismatched; null: being checked.",
    )
    samples: int | None = Field(default=None, description="Training samples in the index.")
    validation_samples: int | None = None
    epochs: list[float] | None = Field(
        default=None, description="[least, most] passes a planned trial makes over the data."
    )
    message: str = ""


class StrategyStatus(Model):
    """What the sweep's strategy trains, against the full grid trained from scratch."""

    full_grid_flops: float = Field(description="Every planned trial from scratch.")
    planned_flops: float = Field(
        description="What the strategy trains: stable runs charged once, branches their "
        "cooldowns, trials the adaptive ladder left out not at all (undecided ones counted)."
    )
    compute_fraction: float = Field(description="plannedFlops / fullGridFlops.")
    spent_flops: float = Field(description="Trained so far (succeeded runs).")
    branches: int = 0
    stable_segments: int = 0
    skipped: int = 0


class ScalingSweepStatus(Model):
    """The status both the operator and the local runner write."""

    phase: Phase = "Pending"
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    flops_accounting: FlopsAccounting | None = None
    progress: str = Field(default="0/0", description="Trials done / total, for kubectl get.")
    counts: TrialCounts = Field(default_factory=TrialCounts)
    budgets: list[BudgetSummary] = Field(default_factory=list)
    trials: list[TrialRecord] = Field(
        default_factory=list,
        description="Per-trial records: in status.json of a local run. The operator keeps them "
        "in one ConfigMap per budget (budgets[].records) and leaves this empty.",
    )
    fitted_budgets: list[float] = Field(
        default_factory=list, description="Budgets of the last fit."
    )
    fit: FitResult | None = None
    strategy: StrategyStatus | None = Field(
        default=None, description="Set when spec.strategy asks for adaptive ladders or branches."
    )
    data: DataStatus | None = None
    admitted: dict[str, str] | None = Field(
        default=None,
        description="A digest of each field that defines the sweep (model.family, data, "
        "flopsAccounting) as first admitted: a spec that differs in one is refused, and nothing "
        "is done for it until the field is restored.",
    )


# ------------------------------------------------------------------------------------------------
# manifests


class ObjectMeta(Model):
    model_config = ConfigDict(extra="allow")
    name: str
    namespace: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if len(v) > NAME_MAX_LENGTH or not re.match(DNS_LABEL_PATTERN, v):
            raise ValueError(NAME_RULE)
        return v


class ScalingSweep(Model):
    """A whole ScalingSweep object, as in a manifest file or the cluster."""

    api_version: Literal["isoflop.dev/v1alpha1"] = "isoflop.dev/v1alpha1"
    kind: Literal["ScalingSweep"] = "ScalingSweep"
    metadata: ObjectMeta
    spec: ScalingSweepSpec
    status: ScalingSweepStatus | None = None

    @property
    def name(self) -> str:
        return self.metadata.name


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads 1e17 as a float (YAML 1.2, as Kubernetes does), not a string."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^[-+]?(\d[\d_]*(\.[\d_]*)?|\.\d[\d_]*)([eE][-+]?\d+)?$|^[-+]?\.(inf|Inf|INF)$|^\.(nan|NaN|NAN)$"
    ),
    list("-+0123456789."),
)


def yaml_load(text: str) -> Any:
    """Parse YAML the way Kubernetes does for numbers (1e17 is a float)."""
    return yaml.load(text, Loader=_Loader)


def _field_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif not part.startswith("function-"):  # pydantic's names for validator wrappers
            path += f".{part}" if path else part
    return path


def _known_fields(model: Any, loc: tuple[int | str, ...]) -> list[str]:
    """The camelCase keys allowed at `loc` below `model` (for a did-you-mean); [] if unknown."""
    for part in loc:
        if isinstance(part, int) or not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        field = next((f for n, f in model.model_fields.items() if part in (n, f.alias)), None)
        if field is None:
            return []
        models = [a for a in _flatten(field.annotation) if isinstance(a, type)]
        model = next((m for m in models if issubclass(m, BaseModel)), None)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return [f.alias or n for n, f in model.model_fields.items()]
    return []


def _flatten(annotation: Any) -> list[Any]:
    args = typing.get_args(annotation)
    return [annotation] if not args else [a for arg in args for a in _flatten(arg)]


MAX_PROBLEMS = 5  # named in one sentence; more are counted


def describe_validation_error(err: ValidationError, prefix: str = "", model: Any = None) -> str:
    """One sentence naming every offending field (up to MAX_PROBLEMS), an unknown key with the
    known one it is closest to."""
    problems = []
    for e in err.errors():
        loc = tuple(e["loc"])
        path = _field_path(loc)
        if prefix:
            path = f"{prefix}.{path}" if path else prefix
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "is not a known field"
            close = difflib.get_close_matches(str(loc[-1]), _known_fields(model, loc[:-1]), n=1)
            if close:
                msg += f" (did you mean {close[0]}?)"
        elif e["type"] == "missing":
            msg = "is required"
        problems.append(f"{path}: {msg}" if path else msg)
    more = len(problems) - MAX_PROBLEMS
    tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more > 0 else ""
    return "; ".join(problems[:MAX_PROBLEMS]) + tail


def parse_sweep(obj: Mapping[str, Any]) -> ScalingSweep:
    """Validate a manifest dict; raises ManifestError with one sentence naming the field."""
    if not isinstance(obj, Mapping):
        raise ManifestError(
            "the manifest must be a mapping with apiVersion, kind, metadata and spec"
        )
    if obj.get("kind") != KIND or obj.get("apiVersion") != API_VERSION:
        raise ManifestError(
            f"expected apiVersion {API_VERSION} and kind {KIND}, "
            f"got {obj.get('apiVersion')!r} and {obj.get('kind')!r}"
        )
    try:
        return ScalingSweep.model_validate(obj, by_alias=True, by_name=False)
    except ValidationError as err:
        raise ManifestError(describe_validation_error(err, model=ScalingSweep)) from None
    except RecursionError:
        raise ManifestError("the manifest nests too deep for a ScalingSweep") from None


def parse_name(name: str) -> None:
    """Refuse a sweep name the operator cannot use in Job names and labels."""
    try:
        ObjectMeta(name=name)
    except ValidationError as err:
        raise ManifestError(describe_validation_error(err, prefix="metadata")) from None


def parse_spec(spec: Mapping[str, Any]) -> ScalingSweepSpec:
    """Validate a spec alone (as the operator receives it)."""
    try:
        return ScalingSweepSpec.model_validate(spec, by_alias=True, by_name=False)
    except ValidationError as err:
        raise ManifestError(
            describe_validation_error(err, prefix="spec", model=ScalingSweepSpec)
        ) from None


def load_sweep(path: str | Path) -> ScalingSweep:
    """Read and validate a manifest file; every failure is a ManifestError naming the problem."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as err:
        raise ManifestError(f"cannot read {p}: {err.strerror or err}") from None
    try:
        docs = [d for d in yaml.load_all(text, Loader=_Loader) if d is not None]
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ManifestError(f"{p} is not valid YAML{where}") from None
    except RecursionError:
        raise ManifestError(f"{p} nests too deep for a ScalingSweep manifest") from None
    sweeps = [d for d in docs if isinstance(d, dict) and d.get("kind") == KIND]
    if len(sweeps) != 1:
        raise ManifestError(f"{p} must hold exactly one {KIND}, found {len(sweeps)}")
    return parse_sweep(sweeps[0])
