"""Trial results as fitting input: validated arrays, read from CSV or JSON tables."""

from __future__ import annotations

import csv
import json
import math
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
# The standard error of each trial's loss, where the evaluator measured it (optional).
SE_COLUMNS = ("loss_se", "eval_loss_se", "loss_stderr", "se")
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
    "seed",
    "replicate",
}


@dataclass(frozen=True)
class Points:
    """One row per finished trial: nominal budget C, parameters N, tokens D, loss, extra metrics.

    Rows may repeat a (budget, params) pair: replicates of one trial under other seeds. `loss_se`
    is each loss's standard error where the evaluator measured it.
    """

    budget: Array
    params: Array
    tokens: Array
    loss: Array
    metrics: dict[str, Array] = field(default_factory=dict)
    loss_se: Array | None = None

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
        if self.loss_se is not None:
            columns["loss_se"] = self.loss_se
        for name, col in columns.items():
            if col.shape != (n,):
                raise ValueError(f"column {name} has {col.shape[0]} values, expected {n}")
            bad = np.flatnonzero(~np.isfinite(col))
            if bad.size:
                raise ValueError(f"row {bad[0] + 1}: {name} is {col[bad[0]]}, not a finite number")
            bad = np.flatnonzero(col <= 0)
            if bad.size and name not in self.metrics:  # a metric <= 0 only loses its power law
                raise ValueError(f"row {bad[0] + 1}: {name} must be positive, got {col[bad[0]]:g}")

    def __len__(self) -> int:
        return len(self.budget)

    @property
    def budgets(self) -> Array:
        """The distinct budgets, ascending."""
        return np.unique(self.budget)

    @property
    def replicated(self) -> bool:
        """Whether some (budget, params) pair has more than one row."""
        keys = np.stack([self.budget, self.params], axis=1)
        return len(np.unique(keys, axis=0)) < len(self)

    def select(self, mask: NDArray[np.bool_]) -> Points:
        return Points(
            self.budget[mask],
            self.params[mask],
            self.tokens[mask],
            self.loss[mask],
            {k: v[mask] for k, v in self.metrics.items()},
            None if self.loss_se is None else self.loss_se[mask],
        )

    def positive_metrics(self) -> tuple[Points, list[str]]:
        """These points without the metrics that have values <= 0 (no power law fits them), and
        the names of those left out."""
        dropped = [k for k, v in self.metrics.items() if (v <= 0).any()]
        if not dropped:
            return self, []
        kept = {k: v for k, v in self.metrics.items() if k not in dropped}
        return Points(self.budget, self.params, self.tokens, self.loss, kept, self.loss_se), dropped

    def with_loss(self, loss: Array) -> Points:
        """The same trials with other losses (a simulated or resampled sweep)."""
        return Points(self.budget, self.params, self.tokens, loss, self.metrics, self.loss_se)

    def grouped(self, bin_decades: float | None = None, tolerance: float = 1e-3) -> Points:
        """Budgets grouped into the isoFLOP budgets they were meant to be.

        Measured FLOPs differ a little from run to run. By default budgets within `tolerance`
        (relative) of their neighbour form one budget; `bin_decades` instead puts every trial in
        a bin of that width in log10 C. Each group's budget is the geometric mean of its
        members; params, tokens and losses stay as measured.
        """
        log_c = np.log10(self.budget)
        if bin_decades is not None:
            if not math.isfinite(bin_decades) or bin_decades <= 0:
                raise ValueError(
                    f"the budget bin must be a positive width in decades, got {bin_decades}"
                )
            label = np.round(log_c / bin_decades)
        else:
            order = np.argsort(log_c)
            gaps = np.diff(log_c[order]) > math.log10(1.0 + tolerance)
            label = np.empty(len(self))
            label[order] = np.concatenate([[0], np.cumsum(gaps)])
        budget = np.empty(len(self))
        for g in np.unique(label):
            sel = label == g
            members = self.budget[sel]
            same = bool((members == members[0]).all())
            budget[sel] = members[0] if same else 10 ** float(log_c[sel].mean())
        if np.array_equal(budget, self.budget):
            return self
        return Points(budget, self.params, self.tokens, self.loss, self.metrics, self.loss_se)

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, Any]]) -> Points:
        """Dicts with budget, params, tokens (or data), loss and optional numeric metrics."""
        rows = list(rows)
        if not rows:
            raise ValueError("no trial results to fit")
        lower = [{str(k).strip().lower(): v for k, v in r.items()} for r in rows]
        if "phase" in lower[0]:  # a run's trials.csv: only finished trials have a loss to fit
            lower = [r for r in lower if str(r.get("phase", "")).strip() == "Succeeded"]
            if not lower:
                raise ValueError("no trial has succeeded yet: nothing to fit")
        found: dict[str, str] = {}
        for canonical, names in COLUMNS.items():
            name = next((n for n in names if n in lower[0]), None)
            if name is None:
                raise ValueError(
                    f"missing column {canonical!r} (accepted names: {', '.join(names)})"
                )
            found[canonical] = name
        se_name = next((n for n in SE_COLUMNS if n in lower[0]), None)
        if se_name is not None and not all(_is_number(r.get(se_name)) for r in lower):
            se_name = None  # errors measured for some trials only: use none of them
        known = set(found.values()) | IGNORED | set(SE_COLUMNS)
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
            loss_se=None if se_name is None else column(se_name),
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
