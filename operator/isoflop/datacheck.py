"""Before any trial starts: does the sweep's data exist, does it fit the spec, how many epochs?

Reads the shard indexes (local or S3, with the caller's own credentials) and compares their latent
shape, text length and text width with `spec.data`; then says how many passes over the data each
planned trial makes. Procedural data is generated to the spec and needs no check.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from isoflop import api
from isoflop.plan import Plan
from isoflop_trainer.store import ShardIndex, is_shards, read_index


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
        return "\n".join(lines)


def _open(uri: str, what: str) -> ShardIndex:
    try:
        return read_index(uri)
    except (FileNotFoundError, ValueError) as err:
        raise DataCheckError(f"{what} cannot be used: {err}") from None


def _mismatch(spec: api.DataSpec, index: ShardIndex, what: str) -> str | None:
    want = (tuple(spec.latent_shape), spec.text_length, spec.text_dim)
    have = (index.latent_shape, index.text_length, index.text_dim)
    if want == have:
        return None
    names = ("data.latentShape", "data.textLength", "data.textDim")
    fields = [name for name, a, b in zip(names, want, have, strict=True) if a != b]
    c, h, w = spec.latent_shape
    return (
        f"{what} {index.uri} holds {index.describe()}, but the spec asks for latents {c}x{h}x{w}, "
        f"text {spec.text_length}x{spec.text_dim} (check {', '.join(fields)})"
    )


def check_data(spec: api.ScalingSweepSpec, plan: Plan) -> DataReport:
    """The data's report, or DataCheckError naming what is wrong."""
    data = spec.data
    fid = spec.evaluation.fid
    if fid.samples and fid.weights and "://" not in fid.weights and not Path(fid.weights).exists():
        raise DataCheckError(f"evaluation.fid.weights {fid.weights} does not exist")
    if not is_shards(data.source):
        return DataReport(None, None, {})
    train = _open(data.source, "data.source")
    if (problem := _mismatch(data, train, "data.source")) is not None:
        raise DataCheckError(problem)
    val_uri = data.validation_source or train.validation_uri
    validation = None
    if val_uri is not None:
        what = "data.validationSource" if data.validation_source else "the held-out split"
        validation = _open(val_uri, what)
        if (problem := _mismatch(data, validation, what)) is not None:
            raise DataCheckError(problem)
    if fid.samples and fid.vae is None and "vae" not in train.extra:
        raise DataCheckError(
            f"FID decodes latents with a VAE, and {train.uri}/index.json names none: "
            "set evaluation.fid.vae"
        )
    epochs = {t.id: t.steps * t.batch_size / train.samples for t in plan.trials}
    return DataReport(train, validation, epochs)
