"""What a model costs, however it was counted: parameters and training FLOPs per sample."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

FlopsAccounting = Literal["exact", "6ND"]


@dataclass(frozen=True)
class ParamCount:
    """Exact parameter count, total and per module."""

    total: int
    non_embedding: int  # transformer blocks only: no embedders, no final layer
    by_module: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class FlopCount:
    """Training FLOPs for one sample (forward + backward), with the attention share."""

    forward: int
    backward: int
    attention: int  # forward + backward FLOPs of the attention score/value products

    @property
    def total(self) -> int:
        return self.forward + self.backward


class Counted(Protocol):
    @property
    def tokens_per_sample(self) -> int: ...

    def params(self) -> ParamCount: ...
    def flops_per_sample(self) -> FlopCount: ...


class Accounting:
    """A rung's training FLOPs per sample under either accounting, from its own counts (shared by
    the built-in DiTConfig and a class family's ClassConfig)."""

    def flops_per_sample_6nd(self: Counted) -> int:
        """The paper's convention: 6 * N (all parameters) * tokens per sample."""
        return 6 * self.params().total * self.tokens_per_sample

    def training_flops_per_sample(self: Counted, accounting: FlopsAccounting) -> int:
        if accounting == "exact":
            return self.flops_per_sample().total
        return Accounting.flops_per_sample_6nd(self)
