"""What a model costs, however it was counted: parameters and training FLOPs per sample."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

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
