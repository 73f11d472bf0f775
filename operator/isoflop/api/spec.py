"""The spec of a ScalingSweep: what a user writes, validated as strictly as the API server."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    JsonValue,
    PrivateAttr,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from isoflop.api.base import (
    DATA_URI_PATTERN,
    DNS_LABEL_PATTERN,
    DNS_SUBDOMAIN_PATTERN,
    HTTP_URL_PATTERN,
    IMAGE_PATTERN,
    LABEL_KEY_PATTERN,
    LABEL_VALUE_PATTERN,
    QUANTITY_PATTERN,
    STORE_URI_PATTERN,
    Immutable,
    SpecModel,
    s3_bucket_problem,
    s3_bucket_rules,
)
from isoflop_trainer.config import PROCEDURAL_DATASETS, TimestepConditioning
from isoflop_trainer.counts import FlopsAccounting
from isoflop_trainer.families import DIFFUSERS_CLASSES, Measure

ModelFamily = Literal["in-context", "cross-attention", "diffusers", "custom"]
CLASS_FAMILY_FIELDS = ("mlp_ratio", "patch_size", "timestep_conditioning", "qk_norm")


ARGUMENT_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
MAX_ARGUMENTS_BYTES = 8192


def _arguments(v: dict[str, Any]) -> dict[str, Any]:
    """Constructor arguments: Python names, JSON values, a few kilobytes in all."""
    bad = [k for k in v if not re.match(ARGUMENT_NAME, k)]
    if bad:
        raise ValueError(f"{bad[0]!r} is not a Python argument name")
    try:
        text = json.dumps(v, allow_nan=False)
    except (TypeError, ValueError):
        raise ValueError("values must be JSON: strings, numbers, booleans, lists, maps") from None
    if len(text) > MAX_ARGUMENTS_BYTES:
        raise ValueError(f"must be at most {MAX_ARGUMENTS_BYTES} bytes as JSON")
    return v


Arguments = Annotated[dict[str, Any], AfterValidator(_arguments)]


MAX_CLASS_RUNGS = 32  # a class family's: its model check's verdict fits 4 KiB (see modelcheck)


class RungSpec(SpecModel):
    """An explicit ladder rung: one model size."""

    name: str = Field(
        pattern=DNS_LABEL_PATTERN, max_length=20, description="Rung name, used in trial IDs."
    )
    depth: int | None = Field(default=None, ge=1, le=128)
    """Transformer blocks (built-in families; a diffusers class's through its shape rule)."""
    width: int | None = Field(default=None, ge=8, le=16384)
    """Model width (hidden size); a multiple of model.headDim."""
    heads: int | None = Field(default=None, ge=1, le=16384, description="Default: width / headDim.")
    arguments: Arguments = Field(
        default_factory=dict,
        max_length=64,
        description="A class family's constructor arguments for this rung, over model.arguments.",
    )
    learning_rate: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="This rung's learning rate. Default: training.learningRate, scaled by "
        "training.learningRateScaling.",
    )

    @property
    def shape(self) -> tuple[int, int]:
        """(depth, width): a built-in family's rung always has both (ModelSpec checks it)."""
        if self.depth is None or self.width is None:
            raise ValueError(f"configs '{self.name}': give its depth and width")
        return self.depth, self.width


class ModelSpec(SpecModel):
    """The model family and the ladder of sizes every budget is swept over."""

    family: ModelFamily = Field(
        default="in-context",
        description="in-context: text and image tokens share self-attention; "
        "cross-attention: text enters each block through cross-attention (the built-in DiTs); "
        "diffusers: a diffusers transformer class (model.transformer); custom: your own, an "
        "isoflop.families entry point installed in the trainer image.",
        json_schema_extra=Immutable,
    )
    transformer: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,99}$",
        description="The class of a diffusers or custom family: "
        + ", ".join(DIFFUSERS_CLASSES)
        + ", or the name of an isoflop.families entry point.",
        json_schema_extra=Immutable,
    )
    arguments: Arguments = Field(
        default_factory=dict,
        max_length=64,
        description="A class family's base constructor arguments, shared by every rung "
        "(the data's shapes set the channel, sample-size and text-width arguments).",
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
    """Width of each attention head; every rung's width is a multiple of it."""
    mlp_ratio: float = Field(default=4.0, gt=0, le=16)
    """Hidden width of each block's MLP, as a multiple of the model width."""
    patch_size: int = Field(default=2, ge=1, le=16)
    """Side of the square latent patches that become tokens."""
    timestep_conditioning: TimestepConditioning = Field(
        default="adaln-zero", description="adaln-zero, or the timestep as an in-context token."
    )
    qk_norm: bool = False
    """Normalize queries and keys (RMSNorm) before attention."""
    configs: list[RungSpec] = Field(
        default_factory=list, max_length=64, description="Explicit rungs, instead of depths."
    )

    # a class family's model check: each rung's measure by the digest of its ClassConfig, set by
    # isoflop.sweep.families.measured (never written by a user, never serialized)
    _measures: dict[str, Measure] = PrivateAttr(default_factory=dict)

    @property
    def measures(self) -> dict[str, Measure]:
        return dict(self._measures)

    @property
    def is_class_family(self) -> bool:
        return self.family in ("diffusers", "custom")

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
        if self.is_class_family:
            self._class_family()
            return self
        if self.transformer is not None or self.arguments:
            raise ValueError(
                f"model.transformer and model.arguments belong to the diffusers and custom "
                f"families, not the built-in {self.family}"
            )
        for c in self.configs:
            if c.depth is None or c.width is None:
                raise ValueError(f"configs '{c.name}': give its depth and width")
            if c.arguments:
                raise ValueError(
                    f"configs '{c.name}': arguments belong to the diffusers and custom families"
                )
            heads = c.heads or c.width // self.head_dim
            if heads < 1 or c.width % heads:
                raise ValueError(
                    f"configs '{c.name}': width {c.width} does not split into {heads} heads"
                )
        return self

    def _class_family(self) -> None:
        """A class family's rules: its class, and rungs its shape rule or arguments say."""
        if self.transformer is None:
            raise ValueError(f"model.family {self.family} needs model.transformer, its class")
        if self.family == "diffusers" and self.transformer not in DIFFUSERS_CLASSES:
            raise ValueError(
                f"model.transformer: isoflop has no adapter for the diffusers class "
                f"{self.transformer}; it adapts {', '.join(DIFFUSERS_CLASSES)} (or write your own "
                "family: model.family custom)"
            )
        # set to other than its default (a manifest written back by to_wire holds the defaults)
        fields = type(self).model_fields
        fixed = [f for f in CLASS_FAMILY_FIELDS if getattr(self, f) != fields[f].default]
        if fixed:
            name = to_camel(fixed[0])
            raise ValueError(
                f"model.{name} shapes the built-in DiTs; give a {self.family} class's own "
                "argument in model.arguments instead"
            )
        if self.depths and self.family == "custom":
            raise ValueError(
                "model.depths needs a shape rule, which only the built-in and diffusers "
                "families have; give a custom family's rungs as configs with arguments"
            )
        rungs = len(self.depths) + len(self.configs)
        if rungs > MAX_CLASS_RUNGS:
            raise ValueError(
                f"a {self.family} family's ladder has at most {MAX_CLASS_RUNGS} rungs (its model "
                f"check's verdict must fit a pod's termination message), got {rungs}"
            )
        for c in self.configs:
            sized = c.depth is not None or c.width is not None or c.heads is not None
            if self.family == "custom" and sized:
                raise ValueError(
                    f"configs '{c.name}': a custom family's rung is its arguments (no depth, "
                    "width or heads)"
                )
            if sized and (c.depth is None or c.width is None):
                raise ValueError(f"configs '{c.name}': give both depth and width, or arguments")
            if c.width is not None and c.width % (c.heads or self.head_dim):
                raise ValueError(f"configs '{c.name}': width {c.width} does not split into heads")
            if not sized and not c.arguments:
                raise ValueError(f"configs '{c.name}': give its arguments (or depth and width)")


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
        json_schema_extra=s3_bucket_rules(),
        description="procedural://NAME (generated), s3://bucket/prefix or file:///path "
        "(pre-encoded shards).",
    )
    validation_source: str | None = Field(
        default=None,
        pattern=DATA_URI_PATTERN,
        max_length=2048,
        json_schema_extra=s3_bucket_rules(),
        description="Default: the held-out split of source.",
    )

    @field_validator("source", "validation_source")
    @classmethod
    def _bucket(cls, v: str | None) -> str | None:
        problem = s3_bucket_problem(v)
        if problem:
            raise ValueError(f"{problem}, not {v!r}")
        name = (v or "").removeprefix("procedural://").split("?")[0]
        if v and v.startswith("procedural://") and name not in (*PROCEDURAL_DATASETS, ""):
            known = ", ".join(f"procedural://{n}" for n in PROCEDURAL_DATASETS)
            raise ValueError(f"{v!r} is no procedural dataset the trainer knows ({known})")
        return v

    latent_shape: Annotated[
        list[Annotated[int, Field(ge=1, le=4096)]], AfterValidator(_check_shape)
    ] = Field(
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


Flops = Annotated[float, Field(gt=0, le=1e30, allow_inf_nan=False)]  # 1e30: 10^5 x today's largest


class TrainingSpec(SpecModel):
    """Optimisation settings shared by every trial."""

    global_batch_size: int = Field(default=1024, ge=1, le=1 << 20)
    """Samples per optimizer step, over all GPUs and nodes of a trial."""
    micro_batch_size: int | None = Field(
        default=None,
        ge=1,
        le=1 << 20,
        description="Per-GPU micro-batch; the rest is gradient accumulation. Default: automatic.",
    )
    learning_rate: float = Field(default=1e-4, gt=0, le=1)
    """Peak learning rate (AdamW), reached after the warmup."""
    betas: list[float] = Field(default_factory=lambda: [0.9, 0.95], min_length=2, max_length=2)
    """AdamW's [beta1, beta2]."""
    weight_decay: float = Field(default=0.0, ge=0, le=1)
    """AdamW's decoupled weight decay."""
    warmup_fraction: float = Field(
        default=0.05, ge=0, le=0.5, description="Warmup as a fraction of a trial's steps."
    )
    schedule: Literal["constant", "cosine", "wsd"] = "constant"
    """Learning-rate schedule after the warmup: constant, cosine to zero, or wsd
    (warmup-stable-decay, decaying over decayFraction)."""
    decay_fraction: float = Field(default=0.2, ge=0, le=1, description="Cooldown fraction for wsd.")
    precision: Literal["bf16", "fp16", "fp32"] = "bf16"
    """Mixed precision on GPUs (bf16 or fp16 with loss scaling) or fp32; the CPU trains in fp32."""
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
    """How training timesteps are drawn: uniform, or logit-normal (more weight mid-way)."""
    text_dropout: float = Field(
        default=0.1, ge=0, lt=1, description="Caption dropout for guidance."
    )
    grad_clip: float = Field(default=1.0, ge=0, le=1e6)
    """Clip the gradients' global norm to this; 0: no clipping."""
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
        le=16384,
        description="The width at which learningRate holds under width scaling or muP. Default: "
        "the narrowest rung.",
    )
    parameterization: Literal["standard", "mup"] = Field(
        default="standard",
        description="standard: every layer at learningRate, DiT's initialisation. mup: muP for "
        "the built-in DiTs (Adam; hidden and output layers' rates x baseWidth / width, input "
        "layers at their base width's initialisation), so that a rate tuned at baseWidth holds "
        "at every width.",
    )
    eval_samples: int = Field(
        default=512, ge=1, le=1 << 20, description="Validation samples at the end."
    )
    min_steps: int = Field(
        default=100, ge=1, le=10**9, description="Trials with fewer steps are infeasible."
    )
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
LabelKey = Annotated[
    str, Field(min_length=1, max_length=317, pattern=LABEL_KEY_PATTERN)
]  # prefix (253) / name (63)
LabelValue = Annotated[str, Field(max_length=63, pattern=LABEL_VALUE_PATTERN)]
Name = Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)]
DnsLabel = Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL_PATTERN)]
Values = Annotated[list[LabelValue], Field(max_length=64)]


# core/v1's rules for a toleration (ValidateTolerations), in words and for the API server
TOLERATION_RULES: list[tuple[str, str]] = [
    (
        "self.operator == 'Exists' || (has(self.key) && self.key != '')",
        "a toleration without a key must have operator Exists",
    ),
    (
        "self.operator != 'Exists' || !has(self.value) || self.value == ''",
        "a toleration with operator Exists takes no value",
    ),
    (
        "!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
        "tolerationSeconds goes only with effect NoExecute",
    ),
]


class Toleration(SpecModel):
    """core/v1 Toleration: a taint a trial's pods tolerate."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [{"rule": r, "message": m} for r, m in TOLERATION_RULES]
        }
    )

    key: LabelKey | None = None
    """The taint key the toleration matches; empty with operator Exists: every taint."""
    operator: Literal["Exists", "Equal"] = "Equal"
    """Exists (any value) or Equal (the value below)."""
    value: LabelValue | None = None
    """The taint value to match (operator Equal)."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """The taint effect to match (NoSchedule, PreferNoSchedule, NoExecute); empty: all."""
    toleration_seconds: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)
    """How long a NoExecute taint is tolerated before eviction; unset: forever."""

    @model_validator(mode="after")
    def _combination(self) -> Toleration:
        broken = [
            (not self.key and self.operator != "Exists", TOLERATION_RULES[0][1]),
            (self.operator == "Exists" and bool(self.value), TOLERATION_RULES[1][1]),
            (
                self.toleration_seconds is not None and self.effect != "NoExecute",
                TOLERATION_RULES[2][1],
            ),
        ]
        for wrong, message in broken:
            if wrong:
                raise ValueError(message)
        return self


class NodeSelectorRequirement(SpecModel):
    """core/v1 NodeSelectorRequirement."""

    key: LabelKey
    """The node label (or field) key."""
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]
    """How the key's value is compared with the values."""
    values: Values = Field(default_factory=list)
    """The values to compare with (one integer for Gt and Lt; none for Exists, DoesNotExist)."""


class NodeSelectorTerm(SpecModel):
    """core/v1 NodeSelectorTerm: requirements that must all hold."""

    match_expressions: list[NodeSelectorRequirement] = Field(default_factory=list, max_length=16)
    """Requirements on the node's labels, all of which must hold."""
    match_fields: list[NodeSelectorRequirement] = Field(default_factory=list, max_length=16)
    """Requirements on the node's fields, all of which must hold."""


class NodeSelector(SpecModel):
    """core/v1 NodeSelector: terms of which one must hold."""

    node_selector_terms: list[NodeSelectorTerm] = Field(min_length=1, max_length=16)
    """Terms of which at least one must hold."""


class PreferredSchedulingTerm(SpecModel):
    """core/v1 PreferredSchedulingTerm."""

    weight: int = Field(ge=1, le=100)
    """How much this preference counts (1-100)."""
    preference: NodeSelectorTerm
    """The nodes this preference favours."""


class NodeAffinity(SpecModel):
    """core/v1 NodeAffinity."""

    required_during_scheduling_ignored_during_execution: NodeSelector | None = None
    """Nodes a trial's pods must run on."""
    preferred_during_scheduling_ignored_during_execution: list[PreferredSchedulingTerm] = Field(
        default_factory=list, max_length=16
    )
    """Nodes a trial's pods should run on, weighted."""


class LabelSelectorRequirement(SpecModel):
    """meta/v1 LabelSelectorRequirement."""

    key: LabelKey
    """The label key."""
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    """How the label's value is compared with the values."""
    values: Values = Field(default_factory=list)
    """The values to compare with (none for Exists, DoesNotExist)."""


class LabelSelector(SpecModel):
    """meta/v1 LabelSelector."""

    match_labels: dict[LabelKey, LabelValue] = Field(default_factory=dict, max_length=32)
    """Labels that must all be present with these values."""
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list, max_length=16)
    """Requirements on labels, all of which must hold."""


class PodAffinityTerm(SpecModel):
    """core/v1 PodAffinityTerm."""

    topology_key: LabelKey
    """The node label whose value defines co-location (e.g. kubernetes.io/hostname)."""
    label_selector: LabelSelector | None = None
    """The pods this term is about."""
    namespace_selector: LabelSelector | None = None
    """The namespaces of those pods, by label; unset: the namespaces below."""
    namespaces: list[Name] = Field(default_factory=list, max_length=64)
    """The namespaces of those pods; empty with no selector: the trial's own."""
    match_label_keys: list[LabelKey] = Field(default_factory=list, max_length=16)
    """Label keys whose values the incoming pod's must equal."""
    mismatch_label_keys: list[LabelKey] = Field(default_factory=list, max_length=16)
    """Label keys whose values the incoming pod's must differ from."""


class WeightedPodAffinityTerm(SpecModel):
    """core/v1 WeightedPodAffinityTerm."""

    weight: int = Field(ge=1, le=100)
    """How much this preference counts (1-100)."""
    pod_affinity_term: PodAffinityTerm
    """The pods this preference is about."""


class PodAffinity(SpecModel):
    """core/v1 PodAffinity (and PodAntiAffinity)."""

    required_during_scheduling_ignored_during_execution: list[PodAffinityTerm] = Field(
        default_factory=list, max_length=16
    )
    """Terms a trial's pods must satisfy."""
    preferred_during_scheduling_ignored_during_execution: list[WeightedPodAffinityTerm] = Field(
        default_factory=list, max_length=16
    )
    """Terms a trial's pods should satisfy, weighted."""


class Affinity(SpecModel):
    """core/v1 Affinity: where a trial's pods may be scheduled."""

    node_affinity: NodeAffinity | None = None
    """Which nodes a trial's pods may run on."""
    pod_affinity: PodAffinity | None = None
    """Pods a trial's pods should run near."""
    pod_anti_affinity: PodAffinity | None = None
    """Pods a trial's pods should run away from."""


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

    image: str = Field(
        default="ghcr.io/isoflop/trainer:0.1.0",
        min_length=1,
        max_length=1024,
        pattern=IMAGE_PATTERN,
    )
    """The trainer image every trial's pods run (the installation's policy may restrict it)."""
    gpus_per_node: int = Field(default=1, ge=0, le=64)
    """GPUs per node of a trial, one torchrun rank each (nvidia.com/gpu); 0: CPU."""
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
    """Nodes per trial: more than 1 is an Indexed Job with a headless Service for the rendezvous."""
    cpu: str = Field(default="8", pattern=QUANTITY_PATTERN, max_length=32)
    """CPU request and limit of each pod (a Kubernetes quantity)."""
    memory: str = Field(default="64Gi", pattern=QUANTITY_PATTERN, max_length=32)
    """Memory request and limit of each pod (a Kubernetes quantity)."""
    node_selector: dict[LabelKey, LabelValue] = Field(default_factory=dict, max_length=32)
    """Node labels a trial's pods must run on (a GPU node pool)."""
    tolerations: list[Toleration] = Field(default_factory=list, max_length=32)
    """Taints a trial's pods tolerate (a GPU node pool's taint)."""
    affinity: Affinity | None = None
    """Where a trial's pods may be scheduled (core/v1 Affinity)."""
    priority_class_name: Name | None = None
    """The PriorityClass of a trial's pods."""
    queue_name: DnsLabel | None = None
    """Kueue's LocalQueue, in the sweep's namespace, that every Job of the sweep waits in (the
    label kueue.x-k8s.io/queue-name): a trial is Queued until Kueue admits it against its
    ClusterQueue's quota. Unset: the installation's default queue (the chart's queue.default),
    or none."""
    workload_priority_class: DnsLabel | None = None
    """Kueue's WorkloadPriorityClass of the sweep's Jobs (kueue.x-k8s.io/priority-class): which
    workloads Kueue admits first and evicts last. Needs a queue."""
    image_pull_secrets: list[Name] = Field(default_factory=list, max_length=16)
    """Secrets (by name) the kubelet pulls the image with."""
    service_account_name: Name | None = None
    """The ServiceAccount a trial's pods run as; the sender must be allowed to use it."""
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
        pattern=STORE_URI_PATTERN,
        max_length=2048,
        json_schema_extra=s3_bucket_rules(),
        description="s3://bucket/prefix (or file:// on a shared volume); each trial writes "
        "PREFIX/SWEEP/TRIAL/. Unset: checkpoints live in the pod and are lost with it.",
    )

    @field_validator("checkpoints")
    @classmethod
    def _bucket(cls, v: str | None) -> str | None:
        problem = s3_bucket_problem(v)
        if problem:
            raise ValueError(f"{problem}, not {v!r}")
        return v

    shared_memory: str = Field(
        default="16Gi",
        pattern=QUANTITY_PATTERN,
        max_length=32,
        description="Size of the memory-backed /dev/shm of trial pods.",
    )


class RetrySpec(SpecModel):
    """How failures are retried, and how many a sweep tolerates."""

    per_trial: int = Field(default=2, ge=0, le=100, description="Retries of one failed trial.")
    max_failed_trials: int = Field(
        default=3,
        ge=0,
        le=4096,
        description="Trials that may fail for good before the sweep fails (at most 4096, the "
        "largest sweep's trials).",
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
    """Train the later budgets only around the optimum the earlier ones found."""
    wsd_branches: WsdBranchesSpec | None = None
    """Train each rung once at a constant rate and branch a cooldown off it for each budget."""


LearningRate = Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]


class TuningSpec(SpecModel):
    """A tuning stage before the grid: a log grid of learning rates at a few small budgets and
    rungs. isoflop fits each rung's optimum (the minimum of a parabola in log learning rate),
    then the law eta*(N, D) = coefficient x N^alpha x D^beta across them, and trains every
    grid trial and confirmation at the law's rate for its own N and D."""

    budgets: Annotated[list[Flops], AfterValidator(_unique)] = Field(
        default_factory=list,
        max_length=4,
        description="Budgets (FLOPs) of the tuning trials. Default: the grid's smallest budget "
        "and half of it (two budgets tell the law's N and D exponents apart).",
    )
    rungs: list[Annotated[str, Field(pattern=DNS_LABEL_PATTERN, max_length=20)]] = Field(
        default_factory=list,
        max_length=6,
        description="Ladder rungs (by name: dNN for a depth ladder) to tune. Default: three "
        "across the ladder, the smallest, the middle and the largest that every tuning budget "
        "can train.",
    )
    learning_rates: Annotated[list[LearningRate], AfterValidator(_unique)] = Field(
        default_factory=list,
        max_length=9,
        description="The grid of peak learning rates, at least three, best log-spaced. Default: "
        "training.learningRate x 2^k for k = -2..2.",
    )
    global_batch_sizes: Annotated[
        list[Annotated[int, Field(ge=1, le=1 << 20)]], AfterValidator(_unique)
    ] = Field(
        default_factory=list,
        max_length=7,
        description="Where given (at least three, best log-spaced), a grid of global batch "
        "sizes too: each rung trains them at its optimum learning rate once that is found, and "
        "the law B*(D) = coefficient x D^beta across the optima sets every grid trial's batch "
        "(a multiple of training.microBatchSize and of a trial's GPUs). Empty: every trial "
        "trains at training.globalBatchSize.",
    )
    widen: int = Field(
        default=4,
        ge=0,
        le=6,
        description="Grid steps added beyond an edge, one at a time, where a rung's lowest loss "
        "sits at it; past them the stage stops and proposes a wider grid instead of fitting a "
        "law through an edge.",
    )

    @field_validator("learning_rates")
    @classmethod
    def _three(cls, v: list[float]) -> list[float]:
        if 0 < len(v) < 3:
            raise ValueError("give at least three learning rates: a parabola needs three points")
        return v

    @field_validator("global_batch_sizes")
    @classmethod
    def _three_batches(cls, v: list[int]) -> list[int]:
        if 0 < len(v) < 3:
            raise ValueError("give at least three batch sizes: a parabola needs three points")
        return v


class MetricsSpec(SpecModel):
    """Where the operator reads trial metrics (Prometheus), and how long it waits."""

    prometheus_url: str | None = Field(
        default=None,
        pattern=HTTP_URL_PATTERN,
        max_length=2048,
        description="Unset: results come from the termination message.",
    )
    query_timeout_seconds: float = Field(default=10, gt=0, le=300)
    """Seconds to wait for Prometheus before falling back to the termination message."""
    lookback: str = Field(
        default="1h",
        pattern=r"^[1-9][0-9]{0,5}[smhd]$",
        max_length=7,
        description="Range searched for a trial's last sample.",
    )


# An MLflow experiment name: printable, no control characters (MLflow's own limit is 500)
EXPERIMENT_PATTERN = r"^[^\x00-\x1f\x7f]+$"


class MlflowSpec(SpecModel):
    """An MLflow tracking server: the sweep is an experiment, each budget a parent run, each
    trial a child run, the fitted laws a run of their own."""

    tracking_uri: str | None = Field(
        default=None,
        alias="trackingUri",
        pattern=HTTP_URL_PATTERN,
        max_length=2048,
        description="The tracking server (http or https). Unset: the installation's default "
        "(the chart's tracking.mlflow.trackingUri) on a cluster, MLFLOW_TRACKING_URI for "
        "`isoflop run`. On a cluster it must be one the installation allows "
        "(policy.mlflowTrackingUris).",
    )
    experiment: str | None = Field(
        default=None,
        min_length=1,
        max_length=500,
        pattern=EXPERIMENT_PATTERN,
        description="The experiment's name. Unset: isoflop/NAMESPACE/SWEEP on a cluster, "
        "isoflop/SWEEP on one machine.",
    )
    credentials_secret: Name | None = Field(
        default=None,
        description="Secret with MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD or "
        "MLFLOW_TRACKING_TOKEN (or MLFLOW_TRACKING_AUTH), given to a cluster sweep's trial pods as "
        "environment variables: its creator must be allowed to get it. `isoflop run` takes them "
        "from its environment.",
    )


class TrackingSpec(SpecModel):
    """Where a sweep's runs are tracked besides Prometheus and the status."""

    mlflow: MlflowSpec | None = None
    """Unset: no tracker, unless the installation has a default server (a cluster) or
    MLFLOW_TRACKING_URI is set (`isoflop run`)."""


def _resamples(value: int) -> int:
    if 0 < value < 100:
        raise ValueError(f"{value} resamples are too few for an interval's tails; use 0 or 100+")
    return value


class FitSpec(SpecModel):
    """How the scaling laws are fitted, with which intervals and predictions."""

    method: Literal["parabola", "parametric", "both"] = "both"
    """parabola: isoFLOP parabolas and power laws; parametric: L(N, D) = E + A/N^alpha +
    B/D^beta; both."""
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
    seed: int = Field(default=0, ge=0, le=2**53 - 1)
    """Seed of the bootstrap resamples (at most 2^53 - 1, exact in any JSON client)."""
    predict: list[Flops] = Field(
        default_factory=list, max_length=32, description="Budgets (FLOPs) to predict."
    )
    hold_out_budget: float | None = Field(
        default=None, gt=0, description="A budget to leave out of the fit and predict, as a check."
    )


class ShapeSpec(SpecModel):
    """One model a confirmation may train: its depth and width."""

    depth: int = Field(ge=1, le=128)
    """Transformer blocks."""
    width: int = Field(ge=8, le=16384)
    """Model width (hidden size)."""
    heads: int | None = Field(
        default=None, ge=1, le=16384, description="Default: width / model.headDim."
    )


class ConfirmationSpec(SpecModel):
    """How the model of a confirmation run (spec.confirm) is chosen, and what it trains on."""

    shapes: list[ShapeSpec] = Field(
        default_factory=list,
        max_length=256,
        description="The models a confirmation chooses from (the nearest to the predicted N*). "
        "Default: the ladder's own shape rule extended (width = widthPerDepth x depth for a "
        "depth ladder; every width of the rungs' depth, or their width/depth ratio, for configs).",
    )
    gpus_per_node: int | None = Field(
        default=None, ge=0, le=64, description="Default: resources.gpusPerNode."
    )
    nodes: int | None = Field(default=None, ge=1, le=1024, description="Default: resources.nodes.")
    gpu_memory_gib: float | None = Field(
        default=None,
        alias="gpuMemoryGiB",
        gt=0,
        le=4096,
        description="Default: resources.gpuMemoryGiB.",
    )
    cpu: str | None = Field(
        default=None, pattern=QUANTITY_PATTERN, max_length=32, description="Default: resources.cpu."
    )
    memory: str | None = Field(
        default=None,
        pattern=QUANTITY_PATTERN,
        max_length=32,
        description="Default: resources.memory.",
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
    """The likelihood of validation samples in bits per dimension (the probability-flow ODE)."""

    samples: int = Field(
        default=0, ge=0, le=1 << 20, description="Validation samples for bits/dim; 0: none."
    )
    steps: int = Field(default=32, ge=2, le=1000, description="ODE steps of the integral.")


class EvaluationSpec(SpecModel):
    """The paper's metrics beside the validation loss; each gets its law when asked for."""

    fid: FidSpec = Field(default_factory=FidSpec)
    likelihood: LikelihoodSpec = Field(default_factory=LikelihoodSpec)


CONFIRM_ABOVE = (
    "every confirm budget must lie above every budget of the grid: a confirmation trains where "
    "the laws extrapolate (fit.holdOutBudget checks a budget inside the grid)"
)
CONFIRM_SURFACE = (
    "confirm predicts its loss from the fitted surface L(N, D): fit.method must be parametric or "
    "both"
)
CONFIRM_SHAPES = (
    "confirm needs a shape rule to turn the predicted N* into a model: these configs share "
    "neither a depth nor a width/depth ratio, so give confirmation.shapes"
)
CONFIRM_HEADS = (
    "every confirmation.shapes width must split into its heads (default width / headDim)"
)

TUNING_WSD = (
    "tuning gives each budget's trial of a rung a rate of its own, and strategy.wsdBranches "
    "trains them all from one constant-rate run: use one of them"
)
TUNING_SCALING = (
    "tuning sets every trial's learning rate from its law; training.learningRateScaling must be "
    "none with it"
)
TUNING_CONFIG_RATE = (
    "tuning sets every trial's learning rate from its law; a model.configs entry gives one of "
    "its own (remove learningRate there)"
)
TUNING_MICRO = "every tuning.globalBatchSizes entry must be a multiple of training.microBatchSize"
_TUNING = "has(self.tuning)"
# the same rules as ScalingSweepSpec._tuning, for the API server
_TUNING_CEL: list[JsonValue] = [
    {
        "rule": f"!{_TUNING} || !has(self.strategy) || !has(self.strategy.wsdBranches)",
        "message": TUNING_WSD,
    },
    {
        "rule": f"!{_TUNING} || !has(self.training) || !has(self.training.learningRateScaling) "
        "|| self.training.learningRateScaling == 'none'",
        "message": TUNING_SCALING,
    },
    {
        "rule": f"!{_TUNING} || !has(self.model.configs) "
        "|| self.model.configs.all(c, !has(c.learningRate))",
        "message": TUNING_CONFIG_RATE,
    },
    {
        "rule": f"!{_TUNING} || !has(self.tuning.globalBatchSizes) || !has(self.training) "
        "|| !has(self.training.microBatchSize) "
        "|| self.tuning.globalBatchSizes.all(b, b % self.training.microBatchSize == 0)",
        "message": TUNING_MICRO,
    },
]

MAX_TRIALS = 4096  # budgets x rungs x replicates: the largest sweep one resource may hold
_TRIALS_CEL = (
    "size(self.budgets) * (size(self.model.depths) + size(self.model.configs))"
    " * (has(self.training) && has(self.training.replicates) ? self.training.replicates : 1)"
)


_CONFIRMING = "has(self.confirm) && size(self.confirm) > 0"
_HEAD_DIM = "(has(self.model.headDim) ? self.model.headDim : 64)"
# the same rules as ScalingSweepSpec._confirmation, for the API server
_CONFIRM_CEL: list[JsonValue] = [
    {
        "rule": "!has(self.confirm) || self.confirm.all(c, self.budgets.all(b, c > b))",
        "message": CONFIRM_ABOVE,
    },
    {
        "rule": f"!({_CONFIRMING}) || !has(self.fit) || !has(self.fit.method) "
        "|| self.fit.method != 'parabola'",
        "message": CONFIRM_SURFACE,
    },
    {
        "rule": f"!({_CONFIRMING}) || (has(self.confirmation) && has(self.confirmation.shapes) "
        "&& size(self.confirmation.shapes) > 0) || !has(self.model.configs) "
        "|| size(self.model.configs) == 0 "
        "|| self.model.configs.all(c, c.depth == self.model.configs[0].depth) "
        "|| self.model.configs.all(c, c.width * self.model.configs[0].depth "
        "== self.model.configs[0].width * c.depth)",
        "message": CONFIRM_SHAPES,
    },
    {
        "rule": "!has(self.confirmation) || !has(self.confirmation.shapes) "
        "|| self.confirmation.shapes.all(s, has(s.heads) ? s.width % s.heads == 0 "
        f": s.width / {_HEAD_DIM} >= 1 && s.width % (s.width / {_HEAD_DIM}) == 0)",
        "message": CONFIRM_HEADS,
    },
]


class ScalingSweepSpec(SpecModel):
    """What to sweep and how to train it."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": f"{_TRIALS_CEL} <= {MAX_TRIALS}",
                    "message": f"budgets x rungs x training.replicates must be at most "
                    f"{MAX_TRIALS} trials; split the sweep",
                },
                *_CONFIRM_CEL,
                *_TUNING_CEL,
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
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    fit: FitSpec = Field(default_factory=FitSpec)
    strategy: StrategySpec = Field(default_factory=StrategySpec)
    tuning: TuningSpec | None = Field(
        default=None,
        description="Tune the learning rate as a law of N and D before the grid (unset: every "
        "trial at training.learningRate and its scaling rule).",
    )
    confirm: Annotated[list[Flops], AfterValidator(_unique)] = Field(
        default_factory=list,
        max_length=8,
        description="Budgets (FLOPs, above every budget of the grid) at which to train the model "
        "the final laws call compute-optimal, once they are final, and check the loss they "
        "predicted for it.",
    )
    confirmation: ConfirmationSpec = Field(default_factory=ConfirmationSpec)
    """How a confirmation's model is chosen and what it trains on."""

    @model_validator(mode="after")
    def _cross_fields(self) -> ScalingSweepSpec:
        _, height, width = self.data.latent_shape
        p = self.model.patch_size
        self._class_family()
        if self.model.transformer is None and (height % p or width % p):
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
        self._batch_split()
        held = self.fit.hold_out_budget
        if held is not None and held not in self.budgets:
            raise ValueError(f"fit.holdOutBudget {held:g} is not one of budgets")
        if self.strategy.wsd_branches is not None and self.training.schedule == "cosine":
            raise ValueError(
                "strategy.wsdBranches trains every trial as a WSD cooldown; training.schedule "
                "cosine contradicts it (leave it unset or say wsd)"
            )
        self._confirmation()
        self._tuning()
        if (
            self.training.parameterization == "mup"
            and self.training.learning_rate_scaling != "none"
        ):
            raise ValueError(
                "training.parameterization mup scales each layer's rate by width itself; "
                "training.learningRateScaling must be none with it"
            )
        seeds = self.strategy.adaptive.seed_budgets if self.strategy.adaptive else 0
        if seeds > len(self.budgets):
            raise ValueError(
                f"strategy.adaptive.seedBudgets is {seeds}, more than the {len(self.budgets)} "
                "budgets"
            )
        return self

    def _batch_split(self) -> None:
        """The global batch splits evenly over a trial's processes (one per GPU, on every
        node; one for a packed trial), the grid's and the confirmation's: the trainer refuses
        a batch that does not, and every trial would fail."""
        res, conf, batch = self.resources, self.confirmation, self.training.global_batch_size
        shapes = (
            []
            if res.packing is not None
            else [("trial", "resources", res.gpus_per_node, res.nodes)]
        )
        if self.confirm:
            gpus = res.gpus_per_node if conf.gpus_per_node is None else conf.gpus_per_node
            shapes.append(("confirmation", "confirmation", gpus, conf.nodes or res.nodes))
        for what, where, gpus, nodes in shapes:
            ranks = max(gpus, 1) * nodes
            if batch % ranks:
                raise ValueError(
                    f"training.globalBatchSize {batch} does not split evenly over a {what}'s "
                    f"{ranks} processes ({where}.gpusPerNode x {where}.nodes)"
                )

    def _class_family(self) -> None:
        """What a class family cannot do yet, or ever: muP's per-layer roles are the built-in
        DiT's, and a confirmation's model beyond the ladder would need a model check of its
        own."""
        family = self.model.family
        if not self.model.is_class_family:
            return
        if self.training.parameterization == "mup":
            raise ValueError(
                f"training.parameterization mup knows the built-in DiTs' layers only; a {family} "
                "family trains in the standard parameterization"
            )
        if self.confirm:
            raise ValueError(
                f"confirm: confirmation runs are not yet planned for the {family} family (their "
                "model is beyond the ladder, and has no model check); leave confirm empty"
            )

    def _tuning(self) -> None:
        """spec.tuning's rules: rungs of the ladder, and no other rule for the learning rate (the
        API server's are _TUNING_CEL)."""
        tuning = self.tuning
        if tuning is None:
            return
        names = [f"d{d:02d}" for d in self.model.depths] + [c.name for c in self.model.configs]
        unknown = [r for r in tuning.rungs if r not in names]
        if unknown:
            raise ValueError(
                f"tuning.rungs: {unknown[0]} is not a rung of the ladder ({', '.join(names)})"
            )
        if len(set(tuning.rungs)) != len(tuning.rungs):
            raise ValueError("tuning.rungs must not repeat")
        if self.strategy.wsd_branches is not None:
            raise ValueError(TUNING_WSD)
        if self.training.learning_rate_scaling != "none":
            raise ValueError(TUNING_SCALING)
        fixed = [c.name for c in self.model.configs if c.learning_rate is not None]
        if fixed:
            raise ValueError(f"{TUNING_CONFIG_RATE} (model.configs {fixed[0]})")
        micro = self.training.micro_batch_size
        odd = [b for b in tuning.global_batch_sizes if micro and b % micro]
        if odd:
            raise ValueError(f"{TUNING_MICRO} ({odd[0]} is not a multiple of {micro})")
        gpus = max(self.resources.gpus_per_node, 1) * self.resources.nodes
        uneven = [b for b in tuning.global_batch_sizes if b % gpus]
        if uneven:
            raise ValueError(
                f"every tuning.globalBatchSizes entry must split evenly over a trial's {gpus} "
                f"GPUs (resources.gpusPerNode x nodes); {uneven[0]} does not"
            )

    def _confirmation(self) -> None:
        """spec.confirm's rules (the API server's are _CONFIRM_CEL)."""
        for shape in self.confirmation.shapes:
            heads = shape.heads or shape.width // self.model.head_dim
            if heads < 1 or shape.width % heads:
                raise ValueError(
                    f"{CONFIRM_HEADS}: width {shape.width} does not split into {heads} heads"
                )
        if not self.confirm:
            return
        top = max(self.budgets)
        low = [c for c in self.confirm if c <= top]
        if low:
            raise ValueError(f"{CONFIRM_ABOVE}; {low[0]:g} is not above {top:g}")
        if self.fit.method == "parabola":
            raise ValueError(CONFIRM_SURFACE)
        configs = self.model.configs
        if configs and not self.confirmation.shapes:
            (d0, w0), shapes = configs[0].shape, [c.shape for c in configs]
            same_depth = all(d == d0 for d, _ in shapes)
            same_ratio = all(w * d0 == w0 * d for d, w in shapes)
            if not (same_depth or same_ratio):
                raise ValueError(CONFIRM_SHAPES)
