"""Model families: how the trainer builds, feeds and reads every model it trains.

A family turns a rung's config into a module whose forward is the trainer's one contract,
`(x (B, C, H, W), t (B,) in [0, 1], text (B, L, d)) -> velocity (B, C, H, W)`, with x the noisy
latent of rectified flow (t = 1 is noise). The built-in DiTs (`isoflop_trainer.models.dit`) have
that forward already. diffusers' transformers are adapted here: each adapter completes the
class's constructor arguments from the data's shapes, builds it, and translates the inputs (its
timestep scale, a pooled text vector, packed latents and position ids) and its output. A team's
own transformer is a `Family` subclass published as an entry point in the group
`isoflop.families` of a package installed in the trainer's image.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, cast

import torch
from torch import nn

from isoflop_trainer.config import DiTConfig, ModelConfig
from isoflop_trainer.families import DIFFUSERS_CLASSES, ENTRY_POINT_GROUP, ClassConfig


class FamilyError(ValueError):
    """A class family cannot be built as asked; one sentence naming the argument or the class."""


@dataclass(frozen=True)
class Inputs:
    """The data's shapes, which every model of a sweep is fed."""

    latent_channels: int
    latent_height: int
    latent_width: int
    text_length: int
    text_dim: int

    @classmethod
    def of(cls, cfg: ClassConfig) -> Inputs:
        return cls(
            cfg.latent_channels, cfg.latent_height, cfg.latent_width, cfg.text_length, cfg.text_dim
        )


class Family(ABC):
    """A model family: what isoflop needs to train a transformer class at any size.

    Subclass it for your own model, and publish the subclass (or an instance) as an entry point
    in the group `isoflop.families`; `model.transformer` in the sweep names the entry point."""

    @abstractmethod
    def build(self, arguments: dict[str, Any], inputs: Inputs) -> nn.Module:
        """The model of one rung, with fresh random weights (the trainer seeds torch first)."""

    @abstractmethod
    def velocity(
        self, model: nn.Module, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor
    ) -> torch.Tensor:
        """The predicted velocity eps - x0 of x = (1 - t) x0 + t eps, shaped like x."""

    @abstractmethod
    def tokens_per_sample(self, arguments: dict[str, Any], inputs: Inputs) -> int:
        """Tokens of one sample that pass through every block (D per sample under 6ND)."""

    def blocks(self, model: nn.Module) -> list[nn.Module]:
        """The repeated blocks, sharded one by one under FSDP and counted as the non-embedding
        parameters: by default every module of the model's ModuleLists."""
        return [b for child in model.children() if isinstance(child, nn.ModuleList) for b in child]

    def shape(self, arguments: dict[str, Any], model: nn.Module) -> tuple[int, int]:
        """(width, heads) of the blocks, for tables; (0, 0) where the family does not say."""
        return 0, 0


class FamilyModel(nn.Module):
    """A class family's model behind the trainer's forward: x, t, text -> velocity."""

    def __init__(self, family: Family, inner: nn.Module) -> None:
        super().__init__()
        self.family, self.inner = family, inner

    @property
    def blocks(self) -> list[nn.Module]:
        return self.family.blocks(self.inner)

    def forward(self, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return self.family.velocity(self.inner, x, t, text)


# -- diffusers --------------------------------------------------------------------------------


class DiffusersFamily(Family):
    """A diffusers transformer: the class's own arguments, completed from the data's shapes."""

    name = ""

    def data_arguments(self, inputs: Inputs) -> dict[str, Any]:
        """Arguments the data decides: channels, sample size, text widths."""
        return {}

    def defaults(self, arguments: dict[str, Any], inputs: Inputs) -> dict[str, Any]:
        """Arguments the adapter chooses where the sweep does not (sizes of small models)."""
        return {}

    def complete(self, arguments: dict[str, Any], inputs: Inputs) -> dict[str, Any]:
        fixed = self.data_arguments(inputs)
        for key, value in fixed.items():
            if key in arguments and arguments[key] != value:
                raise FamilyError(
                    f"argument {key}={arguments[key]!r} contradicts the data, which sets it to "
                    f"{value!r} (spec.data): leave it out"
                )
        out = {**arguments, **fixed}
        return {**self.defaults(out, inputs), **out}

    def value(self, arguments: dict[str, Any], name: str) -> Any:
        """An argument as the class gets it: the sweep's, else the constructor's default."""
        if name in arguments:
            return arguments[name]
        return inspect.signature(self.cls().__init__).parameters[name].default

    def width(self, arguments: dict[str, Any]) -> int:
        """Heads x head width: the hidden size of the blocks."""
        heads = self.value(arguments, "num_attention_heads")
        return int(heads) * int(self.value(arguments, "attention_head_dim"))

    def cls(self) -> type[nn.Module]:
        import diffusers

        return cast(type[nn.Module], getattr(diffusers, self.name))

    def build(self, arguments: dict[str, Any], inputs: Inputs) -> nn.Module:
        cls = self.cls()
        full = self.complete(arguments, inputs)
        accepted = inspect.signature(cls.__init__).parameters
        unknown = sorted(set(full) - set(accepted))
        if unknown:
            raise FamilyError(
                f"{self.name} takes no argument {', '.join(map(repr, unknown))} (it takes "
                f"{', '.join(k for k in accepted if k != 'self')})"
            )
        try:
            return cls(**full)
        except Exception as err:  # the constructor's own sentence, whatever it raised
            raise FamilyError(f"{self.name} refused its arguments: {err}") from None

    def shape(self, arguments: dict[str, Any], model: nn.Module) -> tuple[int, int]:
        config: Any = model.config
        heads = int(config.num_attention_heads)
        return heads * int(config.attention_head_dim), heads

    def image_tokens(self, arguments: dict[str, Any], inputs: Inputs) -> int:
        p = int(self.value(arguments, "patch_size"))
        return (inputs.latent_height // p) * (inputs.latent_width // p)


def pooled(text: torch.Tensor) -> torch.Tensor:
    """A pooled text vector for captions encoded without one: the mean of the token embeddings
    (a dropped caption, all zeros, pools to zeros)."""
    return text.mean(dim=1)


def latent_arguments(inputs: Inputs) -> dict[str, Any]:
    """A class that patches the latents itself: channels in and out, and the sample's side."""
    return {
        "in_channels": inputs.latent_channels,
        "out_channels": inputs.latent_channels,
        "sample_size": inputs.latent_height,
    }


class SD3(DiffusersFamily):
    """MMDiT (Stable Diffusion 3): text and image streams with their own weights, joint
    attention over both; adaLN from the timestep and the pooled text vector."""

    name = "SD3Transformer2DModel"

    def data_arguments(self, inputs: Inputs) -> dict[str, Any]:
        return {
            **latent_arguments(inputs),
            "joint_attention_dim": inputs.text_dim,
            "pooled_projection_dim": inputs.text_dim,
        }

    def defaults(self, arguments: dict[str, Any], inputs: Inputs) -> dict[str, Any]:
        p = int(self.value(arguments, "patch_size"))
        side = max(inputs.latent_height, inputs.latent_width) // p
        return {"caption_projection_dim": self.width(arguments), "pos_embed_max_size": side}

    def velocity(
        self, model: nn.Module, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor
    ) -> torch.Tensor:
        out = model(
            hidden_states=x,
            encoder_hidden_states=text,
            pooled_projections=pooled(text),
            timestep=1000.0 * t,
            return_dict=False,
        )
        return cast(torch.Tensor, out[0])

    def tokens_per_sample(self, arguments: dict[str, Any], inputs: Inputs) -> int:
        return self.image_tokens(arguments, inputs) + inputs.text_length


def rope_axes(head_dim: int) -> tuple[int, int, int]:
    """Flux's rotary split of a head (time, row, column), in Flux.1's 16:56:56 proportion, each
    even: 128 -> (16, 56, 56), 32 -> (4, 14, 14)."""
    side = (head_dim * 7 // 16) // 2 * 2
    return head_dim - 2 * side, side, side


class Flux(DiffusersFamily):
    """Flux: MMDiT double-stream blocks, then single-stream blocks over the joined sequence;
    2x2 latent patches packed into tokens, rotary positions from (row, column) ids."""

    name = "FluxTransformer2DModel"

    def data_arguments(self, inputs: Inputs) -> dict[str, Any]:
        return {
            "patch_size": 1,  # the 2x2 patches are packed into channels before the model
            "in_channels": 4 * inputs.latent_channels,
            "out_channels": 4 * inputs.latent_channels,
            "joint_attention_dim": inputs.text_dim,
            "pooled_projection_dim": inputs.text_dim,
        }

    def defaults(self, arguments: dict[str, Any], inputs: Inputs) -> dict[str, Any]:
        head = int(self.value(arguments, "attention_head_dim"))
        return {"axes_dims_rope": rope_axes(head), "guidance_embeds": False}

    def velocity(
        self, model: nn.Module, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor
    ) -> torch.Tensor:
        B, C, H, W = x.shape
        h, w = H // 2, W // 2
        tokens = x.view(B, C, h, 2, w, 2).permute(0, 2, 4, 1, 3, 5).reshape(B, h * w, 4 * C)
        ids = torch.zeros(h, w, 3, device=x.device)
        ids[..., 1] = torch.arange(h, device=x.device)[:, None]
        ids[..., 2] = torch.arange(w, device=x.device)[None]
        kwargs: dict[str, Any] = {}
        config: Any = model.config
        if config.guidance_embeds:
            kwargs["guidance"] = torch.ones_like(t)  # no distilled guidance: scale 1
        out = model(
            hidden_states=tokens,
            encoder_hidden_states=text,
            pooled_projections=pooled(text),
            timestep=t,  # Flux scales it by 1000 itself
            img_ids=ids.reshape(h * w, 3),
            txt_ids=torch.zeros(text.shape[1], 3, device=x.device),
            return_dict=False,
            **kwargs,
        )
        v = cast(torch.Tensor, out[0])
        return v.view(B, h, w, C, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(B, C, H, W)

    def tokens_per_sample(self, arguments: dict[str, Any], inputs: Inputs) -> int:
        return (inputs.latent_height // 2) * (inputs.latent_width // 2) + inputs.text_length


class PixArt(DiffusersFamily):
    """PixArt-alpha/sigma: a DiT with cross-attention to the text and AdaLN-single (one
    timestep modulation shared by every block)."""

    name = "PixArtTransformer2DModel"

    def data_arguments(self, inputs: Inputs) -> dict[str, Any]:
        return {**latent_arguments(inputs), "caption_channels": inputs.text_dim}

    def defaults(self, arguments: dict[str, Any], inputs: Inputs) -> dict[str, Any]:
        return {
            "cross_attention_dim": self.width(arguments),
            "norm_type": "ada_norm_single",
            "use_additional_conditions": False,
        }

    def velocity(
        self, model: nn.Module, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor
    ) -> torch.Tensor:
        out = model(
            hidden_states=x,
            encoder_hidden_states=text,
            timestep=1000.0 * t,
            added_cond_kwargs={"resolution": None, "aspect_ratio": None},
            return_dict=False,
        )
        return cast(torch.Tensor, out[0])

    def tokens_per_sample(self, arguments: dict[str, Any], inputs: Inputs) -> int:
        return self.image_tokens(arguments, inputs)


ADAPTERS: dict[str, type[DiffusersFamily]] = {a.name: a for a in (SD3, Flux, PixArt)}
assert set(ADAPTERS) == set(DIFFUSERS_CLASSES), "the planner's and the trainer's lists differ"


def custom_family(name: str) -> Family:
    """The Family published as entry point `name` in the group isoflop.families."""
    found = [e for e in entry_points(group=ENTRY_POINT_GROUP) if e.name == name]
    if not found:
        installed = sorted(e.name for e in entry_points(group=ENTRY_POINT_GROUP))
        raise FamilyError(
            f"no entry point {name!r} in the group {ENTRY_POINT_GROUP} is installed in this "
            f"environment (installed: {', '.join(installed) or 'none'}): install the package "
            "that publishes it in the trainer's image"
        )
    try:
        obj = found[0].load()
    except Exception as err:
        raise FamilyError(f"entry point {name!r} ({found[0].value}) fails to load: {err}") from None
    family = obj() if isinstance(obj, type) else obj
    if not isinstance(family, Family):
        raise FamilyError(
            f"entry point {name!r} ({found[0].value}) is not an isoflop_trainer.models.adapters"
            ".Family"
        )
    return family


def family_of(cfg: ClassConfig) -> Family:
    if cfg.family == "diffusers":
        return ADAPTERS[cfg.transformer]()
    return custom_family(cfg.transformer)


def build(cfg: ModelConfig, residual_dtype: torch.dtype | None = None) -> nn.Module:
    """The model of one rung, behind the trainer's forward (x, t, text) -> velocity."""
    if isinstance(cfg, DiTConfig):
        from isoflop_trainer.models.dit import DiT

        return DiT(cfg, residual_dtype=residual_dtype)
    family = family_of(cfg)
    return FamilyModel(family, family.build(dict(cfg.arguments), Inputs.of(cfg)))


def blocks(model: nn.Module) -> Sequence[nn.Module]:
    """The repeated blocks of a built model (FSDP shards each)."""
    return cast(Sequence[nn.Module], model.blocks)
