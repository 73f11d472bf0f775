"""Before any trial starts: does the sweep's data exist, does it fit the spec, how many epochs?

Reads the shard indexes (local or S3, with the caller's own credentials) and compares their latent
shape, text length and text width with `spec.data`; then says how many passes over the data each
planned trial makes. Procedural data is generated to the spec and needs no check.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from isoflop import api
from isoflop.sweep.plan import Plan
from isoflop_trainer.data.store import ShardIndex, check_shards, is_shards


class DataCheckError(ValueError):
    """The data is missing or does not fit the spec; one sentence."""


@dataclass(frozen=True)
class DataReport:
    train: ShardIndex | None  # None: procedural
    validation: ShardIndex | None
    epochs: dict[str, float]  # trial id -> passes over the training data

    def text(self) -> str:
        if self.train is None:
            return "data: procedural, generated to the spec (no epochs: it never repeats)"
        lines = [f"data: {self.train.uri}: {self.train.samples} samples, {self.train.describe()}"]
        if self.validation is not None:
            lines.append(f"validation: {self.validation.uri}: {self.validation.samples} samples")
        else:
            lines.append("validation: no held-out split; validating on the training data")
        if self.epochs:
            lo, hi = min(self.epochs.values()), max(self.epochs.values())
            most = max(self.epochs, key=lambda k: self.epochs[k])
            lines.append(f"epochs per trial: {lo:.3g} to {hi:.3g} (most: {most})")
            repeated = sum(e > 1 for e in self.epochs.values())
            if repeated:
                lines.append(
                    f"{repeated} of {len(self.epochs)} trials see samples more than once: the laws "
                    "then mix repetition into scaling (more data, or smaller budgets, avoid it)"
                )
        return "\n".join(lines)


def check_data(spec: api.ScalingSweepSpec, plan: Plan) -> DataReport:
    """The data's report, or DataCheckError naming what is wrong."""
    data = spec.data
    fid = spec.evaluation.fid
    if fid.samples and fid.weights and "://" not in fid.weights and not Path(fid.weights).exists():
        raise DataCheckError(f"evaluation.fid.weights {fid.weights} does not exist")
    if not is_shards(data.source):
        return DataReport(None, None, {})
    c, h, w = data.latent_shape
    try:
        train, validation = check_shards(
            data.source,
            data.validation_source,
            (c, h, w),
            data.text_length,
            data.text_dim,
            need_vae=bool(fid.samples) and fid.vae is None,
        )
    except ValueError as err:
        raise DataCheckError(str(err)) from None
    return DataReport(train, validation, epochs(plan, train.samples))


def epochs(plan: Plan, samples: int) -> dict[str, float]:
    """Passes each planned trial makes over a dataset of `samples`."""
    return {t.id: t.steps * t.batch_size / samples for t in plan.trials}
