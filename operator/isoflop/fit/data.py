"""Trial results as fitting input: validated arrays, read from CSV or JSON tables."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]

# Column names accepted for each quantity (case-insensitive); the first is canonical.
COLUMNS = {
    "budget": ("budget", "compute", "c", "flops_budget"),
    "params": ("params", "n", "parameters"),
    "tokens": ("tokens", "data", "d"),
    "loss": ("loss", "eval_loss", "val_loss"),
}
# Columns that are identifiers or bookkeeping, never metrics.
IGNORED = {
    "id",
    "trial",
    "name",
    "rung",
    "phase",
    "source",
    "depth",
    "width",
    "heads",
    "steps",
    "samples",
    "attempts",
    "flops",
    "flops_exact",
    "flops_6nd",
    "batch_size",
}


@dataclass(frozen=True)
class Points:
    """One row per finished trial: nominal budget C, parameters N, tokens D, loss, extra metrics."""

    budget: Array
    params: Array
    tokens: Array
    loss: Array
    metrics: dict[str, Array] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.budget)
        if n == 0:
            raise ValueError("no trial results to fit")
        columns = {
            "budget": self.budget,
            "params": self.params,
            "tokens": self.tokens,
            "loss": self.loss,
            **self.metrics,
        }
        for name, col in columns.items():
            if col.shape != (n,):
                raise ValueError(f"column {name} has {col.shape[0]} values, expected {n}")
            bad = np.flatnonzero(~np.isfinite(col))
            if bad.size:
                raise ValueError(f"row {bad[0] + 1}: {name} is {col[bad[0]]}, not a finite number")
            bad = np.flatnonzero(col <= 0)
            if bad.size:
                raise ValueError(f"row {bad[0] + 1}: {name} must be positive, got {col[bad[0]]:g}")
        seen: dict[tuple[float, float], int] = {}
        for i, key in enumerate(zip(self.budget.tolist(), self.params.tolist(), strict=True)):
            if key in seen:
                raise ValueError(
                    f"rows {seen[key] + 1} and {i + 1} repeat budget {key[0]:g} with params "
                    f"{key[1]:g}; keep one result per trial"
                )
            seen[key] = i

    def __len__(self) -> int:
        return len(self.budget)

    @property
    def budgets(self) -> Array:
        """The distinct budgets, ascending."""
        return np.unique(self.budget)

    def select(self, mask: NDArray[np.bool_]) -> Points:
        return Points(
            self.budget[mask],
            self.params[mask],
            self.tokens[mask],
            self.loss[mask],
            {k: v[mask] for k, v in self.metrics.items()},
        )

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, Any]]) -> Points:
        """Dicts with budget, params, tokens (or data), loss and optional numeric metrics."""
        rows = list(rows)
        if not rows:
            raise ValueError("no trial results to fit")
        lower = [{str(k).strip().lower(): v for k, v in r.items()} for r in rows]
        found: dict[str, str] = {}
        for canonical, names in COLUMNS.items():
            name = next((n for n in names if n in lower[0]), None)
            if name is None:
                raise ValueError(
                    f"missing column {canonical!r} (accepted names: {', '.join(names)})"
                )
            found[canonical] = name
        known = set(found.values()) | IGNORED
        metric_names = [k for k in lower[0] if k not in known and _is_number(lower[0][k])]

        def column(name: str) -> Array:
            out = np.empty(len(lower))
            for i, r in enumerate(lower):
                value = r.get(name)
                if not _is_number(value):
                    raise ValueError(f"row {i + 1}: {name} is {value!r}, not a number")
                out[i] = float(value)  # type: ignore[arg-type]
            return out

        return cls(
            budget=column(found["budget"]),
            params=column(found["params"]),
            tokens=column(found["tokens"]),
            loss=column(found["loss"]),
            metrics={m: column(m) for m in metric_names},
        )


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return False
        return True
    return False


def read_table(path: str | Path) -> Points:
    """Read a CSV (header row) or JSON (a list of objects, or {"trials": [...]}) table."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as err:
        raise ValueError(f"cannot read {p}: {err.strerror or err}") from None
    if p.suffix.lower() == ".json" or text.lstrip().startswith(("[", "{")):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{p} is not valid JSON (line {err.lineno})") from None
        if isinstance(data, dict):
            data = data.get("trials", data.get("rows"))
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise ValueError(f"{p} must hold a list of objects, or an object with a 'trials' list")
        return Points.from_rows(data)
    rows = list(csv.DictReader(text.splitlines()))
    return Points.from_rows(rows)
