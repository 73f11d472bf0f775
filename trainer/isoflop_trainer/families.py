"""Model families beyond the built-in DiTs, as the planner sees them (torch-free).

A *class family* is a transformer the trainer builds from a class and its constructor arguments:
one of diffusers' text-to-image transformers (`family: diffusers`, the adapters of
`isoflop_trainer.models.adapters`), or the user's own (`family: custom`, a Python entry point in
the group `isoflop.families`, installed in the trainer's image). The planner cannot count such a
model's parameters and FLOPs by formula, so a *model check* builds each rung in the trainer's
environment and measures them (`isoflop_trainer.modelcheck`); the result, a `Measure` per rung,
is what `ClassConfig` plans from. Everything here is plain data: no torch, no diffusers.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from isoflop_trainer.counts import Accounting, FlopCount, ParamCount

ClassFamily = Literal["diffusers", "custom"]
CLASS_FAMILIES: tuple[ClassFamily, ...] = ("diffusers", "custom")
ENTRY_POINT_GROUP = "isoflop.families"


@dataclass(frozen=True)
class ShapeRule:
    """How a depth ladder's (depth, heads, head width) become a class's constructor arguments.

    `depth`: the arguments set to the depth, each times its factor (Flux: its double-stream
    blocks at the depth and twice as many single-stream blocks, Flux.1's 19:38)."""

    depth: tuple[tuple[str, int], ...]
    heads: str
    head_dim: str

    def arguments(self, depth: int, heads: int, head_dim: int) -> dict[str, int]:
        out = {name: factor * depth for name, factor in self.depth}
        return {**out, self.heads: heads, self.head_dim: head_dim}


# The diffusers transformers isoflop has adapters for, with the shape rule of a depth ladder.
DIFFUSERS_CLASSES: dict[str, ShapeRule] = {
    "SD3Transformer2DModel": ShapeRule(
        (("num_layers", 1),), "num_attention_heads", "attention_head_dim"
    ),
    "FluxTransformer2DModel": ShapeRule(
        (("num_layers", 1), ("num_single_layers", 2)), "num_attention_heads", "attention_head_dim"
    ),
    "PixArtTransformer2DModel": ShapeRule(
        (("num_layers", 1),), "num_attention_heads", "attention_head_dim"
    ),
}


@dataclass(frozen=True)
class Measure:
    """One rung as the model check measured it: parameters, and training FLOPs of one sample
    (forward and backward, as torch.utils.flop_counter counts them at batch 1)."""

    params: int
    non_embedding: int  # parameters in the transformer's blocks (its ModuleLists)
    forward: int
    backward: int
    attention: int  # forward + backward FLOPs of attention's score and value products
    tokens_per_sample: int  # tokens through every block weight (D per sample for 6ND)
    depth: int  # blocks
    width: int  # hidden size of the blocks
    heads: int

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Measure:
        return cls(**{k: int(data[k]) for k in cls.__dataclass_fields__})


FIELDS = tuple(Measure.__dataclass_fields__)  # the order of a measure in the compact verdict


def compact(verdict: dict[str, Any]) -> str:
    """The verdict for a pod's termination message (Kubernetes keeps 4 KiB): each rung's measure
    as a list in FIELDS order, the rungs in the order they were asked for; a refusal as its rung
    and sentence. 32 rungs of the largest models a spec allows fit (tested)."""
    rungs = verdict["rungs"]
    refused = [(name, r["error"]) for name, r in rungs.items() if "error" in r]
    if refused:
        name, error = refused[0]
        out: dict[str, Any] = {"status": "failed", "rung": name, "error": error[:1000]}
        if len(refused) > 1:
            out["others"] = [n for n, _ in refused[1:]][:20]
    else:
        out = {
            "status": "succeeded",
            "torch": verdict.get("torch"),
            "measures": [[r["measure"][f] for f in FIELDS] for r in rungs.values()],
        }
    return json.dumps(out, separators=(",", ":"))


def from_compact(said: dict[str, Any], names: list[str]) -> dict[str, Measure] | None:
    """The measures of a compact verdict by rung name (None if it does not hold one measure per
    rung of FIELDS' length: not the verdict of these rungs)."""
    got = said.get("measures")
    if not isinstance(got, list) or len(got) != len(names):
        return None
    out = {}
    for name, values in zip(names, got, strict=True):
        if not isinstance(values, list) or len(values) != len(FIELDS):
            return None
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            return None
        out[name] = Measure(**dict(zip(FIELDS, values, strict=True)))
    return out


@dataclass(frozen=True)
class ClassConfig(Accounting):
    """One rung of a class family: the class, its full constructor arguments, the data's shapes
    and, once the model check has run, its measure. Mirrors `DiTConfig`'s accounting."""

    family: ClassFamily
    transformer: str  # diffusers class name, or the entry point's name
    arguments: dict[str, Any] = field(hash=False)  # base arguments with the rung's overrides
    latent_channels: int = 4
    latent_height: int = 32
    latent_width: int = 32
    text_length: int = 77
    text_dim: int = 768
    measure: Measure | None = None
    parameterization: Literal["standard"] = "standard"  # muP's roles are the built-in DiT's
    base_width: int | None = None

    def __post_init__(self) -> None:
        if self.family not in CLASS_FAMILIES:
            raise ValueError(f"family must be one of {CLASS_FAMILIES}, got {self.family!r}")
        if self.family == "diffusers" and self.transformer not in DIFFUSERS_CLASSES:
            raise ValueError(
                f"diffusers transformer {self.transformer!r} has no isoflop adapter; adapted: "
                + ", ".join(DIFFUSERS_CLASSES)
            )
        measure: Any = self.measure
        if isinstance(measure, dict):  # from JSON
            object.__setattr__(self, "measure", Measure.from_dict(measure))

    def checked(self) -> Measure:
        if self.measure is None:
            raise ValueError(
                f"the {self.transformer} rung has no model check yet: its parameters and FLOPs "
                "are measured by building it in the trainer's environment"
            )
        return self.measure

    def request(self) -> dict[str, Any]:
        """What the model check needs to build this rung (everything but the measure)."""
        out = asdict(self)
        out.pop("measure")
        return out

    def digest(self) -> str:
        """Identifies the model the measure belongs to."""
        text = json.dumps(self.request(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def depth(self) -> int:
        return self.checked().depth

    @property
    def width(self) -> int:
        return self.checked().width

    @property
    def heads(self) -> int:
        return self.checked().heads

    @property
    def tokens_per_sample(self) -> int:
        return self.checked().tokens_per_sample

    def params(self) -> ParamCount:
        m = self.checked()
        return ParamCount(m.params, m.non_embedding, {})

    def flops_per_sample(self) -> FlopCount:
        m = self.checked()
        return FlopCount(forward=m.forward, backward=m.backward, attention=m.attention)
