"""`isoflop-train prepare`: images and captions to the latent and text-embedding shards the DiT
trains on.

Images are decoded, oriented, resized (shorter side, bicubic) and centre-cropped in worker
processes, then encoded in batches by a diffusers `AutoencoderKL` (the posterior's mode, shifted
and scaled by the VAE's own factors, recorded in the index) and a frozen text encoder
(transformers: CLIP text or T5 encoder, padded to a fixed length; its hidden states are the text
embeddings). Class-conditional data (a folder per class) gets one-hot labels instead: one text
token of width `classes`, which the DiT's text projection turns into a class embedding.

Input records are cut into shards of `shard_size` in the source's fixed order, and each finished
shard leaves a marker, so a rerun skips what is done and a crash loses at most one shard. Records
are never dropped silently: every skipped one is counted by reason and listed in its marker, and
the summary says how many and why.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import multiprocessing
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from isoflop_trainer import __version__
from isoflop_trainer.data.sources import (
    EMPTY_CAPTION,
    NO_CAPTION,
    NO_LABEL,
    Record,
    Source,
    decode,
)
from isoflop_trainer.data.store import FORMAT, Store
from isoflop_trainer.progress import progress_bar

Conditioning = Literal["auto", "caption", "class"]
SETTINGS = "prepare.json"  # what the output was prepared with: a resume must match it
PARTS = "parts"  # one marker per finished shard


@dataclass(frozen=True)
class Settings:
    """What decides the output; a resumed run must use the same."""

    vae: str
    image_size: int = 256
    vae_subfolder: str | None = None
    text_encoder: str | None = None  # None: class labels
    text_encoder_subfolder: str | None = None
    tokenizer: str | None = None  # default: the text encoder's path
    tokenizer_subfolder: str | None = None
    max_length: int = 77
    shard_size: int = 1024
    dtype: Literal["float16", "float32"] = "float16"
    validation_fraction: float = 0.0
    conditioning: Conditioning = "auto"

    def __post_init__(self) -> None:
        if self.image_size < 8:
            raise ValueError(f"--image-size must be at least 8, got {self.image_size}")
        if self.shard_size < 1:
            raise ValueError(f"--shard-size must be at least 1, got {self.shard_size}")
        if not 0 <= self.validation_fraction < 1:
            raise ValueError(
                f"--validation-fraction must lie in [0, 1), got {self.validation_fraction}"
            )
        if self.max_length < 1:
            raise ValueError(f"--max-length must be at least 1, got {self.max_length}")

    def resolved(self) -> Settings:
        """Local model paths made absolute: the trainer reads the VAE from the index."""
        return replace(
            self,
            vae=local(self.vae),
            text_encoder=local(self.text_encoder) if self.text_encoder else None,
            tokenizer=local(self.tokenizer) if self.tokenizer else None,
        )


def local(name: str) -> str:
    """An existing local path made absolute; anything else (a hub name, a URI) as it is."""
    path = Path(name)
    return str(path.resolve()) if "://" not in name and path.exists() else name


@dataclass
class Summary:
    records: int = 0
    train: int = 0
    validation: int = 0
    shards_done: int = 0  # written by this run
    shards_skipped: int = 0  # already there: resumed
    skipped: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)  # a few keys per reason

    def text(self, output: str) -> str:
        skipped = self.skipped
        lines = [
            f"prepared {self.train} training and {self.validation} validation samples from "
            f"{self.records} records into {output} ({self.shards_done} shards written, "
            f"{self.shards_skipped} already done)"
        ]
        if skipped:
            lines.append(f"skipped {sum(skipped.values())} records:")
            for reason, count in skipped.most_common():
                shown = ", ".join(self.examples.get(reason, [])[:3])
                lines.append(f"  {count} {reason} (e.g. {shown})")
        else:
            lines.append("skipped none")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# encoders


class Encoders:
    """The VAE and the text encoder (or the class table) of one prepare run."""

    def __init__(self, settings: Settings, classes: list[str] | None, device: str = "cpu") -> None:
        from diffusers import AutoencoderKL

        self.settings, self.classes, self.device = settings, classes, torch.device(device)
        try:
            self.vae = AutoencoderKL.from_pretrained(
                settings.vae, subfolder=settings.vae_subfolder
            ).to(self.device)
        except (OSError, ValueError) as err:
            raise ValueError(f"cannot load the VAE {settings.vae}: {err}") from None
        self.vae.eval().requires_grad_(False)
        cfg = self.vae.config
        self.downsample = 2 ** (len(cfg.block_out_channels) - 1)
        if settings.image_size % self.downsample:
            raise ValueError(
                f"--image-size {settings.image_size} is not divisible by the VAE's "
                f"downsampling factor {self.downsample}"
            )
        self.scaling = float(cfg.scaling_factor)
        self.shift = float(getattr(cfg, "shift_factor", None) or 0.0)
        side = settings.image_size // self.downsample
        self.latent_shape = (int(cfg.latent_channels), side, side)
        self.text_model: Any = None
        if classes is None:
            self._load_text(settings)
        else:
            self.text_length, self.text_dim = 1, len(classes)

    def _load_text(self, s: Settings) -> None:
        from transformers import AutoConfig, AutoModel, AutoTokenizer, CLIPTextModel, T5EncoderModel

        if s.text_encoder is None:
            raise ValueError("captions need a text encoder: give --text-encoder PATH_OR_NAME")
        try:
            where = {"subfolder": s.text_encoder_subfolder} if s.text_encoder_subfolder else {}
            config = AutoConfig.from_pretrained(s.text_encoder, **where)
            kind = config.model_type
            cls: Any = (
                CLIPTextModel
                if kind.startswith("clip")
                else T5EncoderModel
                if kind in ("t5", "mt5", "umt5")
                else AutoModel
            )
            self.text_model = cls.from_pretrained(s.text_encoder, **where).to(self.device)
            # a pipeline repository keeps it beside the encoder: --tokenizer-subfolder tokenizer
            subfolder = s.tokenizer_subfolder or (None if s.tokenizer else s.text_encoder_subfolder)
            self.tokenizer = AutoTokenizer.from_pretrained(
                s.tokenizer or s.text_encoder, **({"subfolder": subfolder} if subfolder else {})
            )
        except (OSError, ValueError) as err:
            raise ValueError(f"cannot load the text encoder {s.text_encoder}: {err}") from None
        self.text_model.eval().requires_grad_(False)
        self.text_kind = kind
        self.text_length = s.max_length
        hidden = getattr(self.text_model.config, "hidden_size", None)
        self.text_dim = int(hidden or self.text_model.config.d_model)

    @torch.no_grad()
    def images(self, pixels: np.ndarray) -> np.ndarray:
        """(n, 3, S, S) uint8 -> (n, C, S/f, S/f) latents: (mode - shift) * scale."""
        x = torch.from_numpy(pixels).to(self.device).float() / 127.5 - 1.0
        z = self.vae.encode(x).latent_dist.mode()
        out: np.ndarray = ((z - self.shift) * self.scaling).float().cpu().numpy()
        return out

    @torch.no_grad()
    def text(
        self, captions: Sequence[str | None], labels: Sequence[int | None]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(n, L, E) embeddings and (n, L) masks of captions, or one-hot labels."""
        n = len(captions)
        if self.classes is not None:
            onehot = np.zeros((n, 1, len(self.classes)), dtype=np.float32)
            onehot[np.arange(n), 0, [int(label or 0) for label in labels]] = 1.0
            return onehot, np.ones((n, 1), dtype=bool)
        tokens = self.tokenizer(
            [c or "" for c in captions],
            padding="max_length",
            max_length=self.text_length,
            truncation=True,
            return_tensors="pt",
        ).to(self.device)
        hidden = self.text_model(
            input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
        ).last_hidden_state
        return hidden.float().cpu().numpy(), tokens["attention_mask"].bool().cpu().numpy()

    def describe(self) -> dict[str, Any]:
        s = self.settings
        out: dict[str, Any] = {
            "image_size": s.image_size,
            "vae": {
                "name": s.vae,
                "subfolder": s.vae_subfolder,
                "scaling_factor": self.scaling,
                "shift_factor": self.shift,
                "downsample": self.downsample,
                "latent": "mode",
            },
        }
        if self.classes is not None:
            out["conditioning"] = "class"
            out["classes"] = list(self.classes)
        else:
            out["conditioning"] = "caption"
            out["text_encoder"] = {
                "name": s.text_encoder,
                "subfolder": s.text_encoder_subfolder,
                "tokenizer": s.tokenizer or s.text_encoder,
                "kind": self.text_kind,
                "max_length": self.text_length,
                "hidden_size": self.text_dim,
            }
        return out


# ------------------------------------------------------------------------------------------------
# the run


def held_out(key: str, fraction: float) -> bool:
    """Whether a record belongs to the validation split: a hash of its key, so the split does not
    depend on order, workers or resumption."""
    if fraction <= 0:
        return False
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def _chunks(records: Iterable[Record], size: int) -> Iterator[list[Record]]:
    it = iter(records)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def _conditioning(source: Source, wanted: Conditioning) -> list[str] | None:
    """The class names when training on labels, None for captions."""
    if wanted == "caption":
        return None
    if wanted == "class" and source.classes is None:
        raise ValueError(f"{source.path} carries no class names for --conditioning class")
    return source.classes if wanted == "class" or source.layout == "classfolder" else None


def prepare(
    source: Source,
    output: str,
    settings: Settings,
    workers: int = 0,
    batch_size: int = 32,
    device: str = "cpu",
    progress: bool = True,
) -> tuple[dict[str, Any], Summary]:
    """Encode `source` into shards under `output`; returns the index and a summary."""
    store = Store(output)
    classes = _conditioning(source, settings.conditioning)
    settings = settings.resolved()
    wanted = _same_settings(store, output, source, settings)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    enc = Encoders(settings, classes, device)
    val_store = store.child("validation")
    summary = Summary()
    train_shards: list[dict[str, Any]] = []
    val_shards: list[dict[str, Any]] = []
    pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 0 else None
    if not progress:
        from transformers.utils import logging

        logging.disable_progress_bar()  # "Loading weights" bars
    try:
        with progress_bar("prepare", source.size(), unit="img", enabled=progress) as advance:
            for k, chunk in enumerate(_chunks(source.records(), settings.shard_size)):
                name = f"shard-{k:05d}.npz"
                marker = f"{PARTS}/shard-{k:05d}.json"
                summary.records += len(chunk)
                if store.exists(marker):
                    part = json.loads(store.read(marker))
                    summary.shards_skipped += 1
                else:
                    part = _encode_shard(
                        chunk, name, enc, settings, store, val_store, pool, batch_size
                    )
                    store.write(marker, json.dumps(part).encode())
                    summary.shards_done += 1
                for reason, keys in part["skipped"].items():
                    summary.skipped[reason] += len(keys)
                    summary.examples.setdefault(reason, []).extend(keys[:3])
                if part["train"]:
                    train_shards.append({"name": name, "samples": part["train"]})
                if part["validation"]:
                    val_shards.append({"name": name, "samples": part["validation"]})
                summary.train += part["train"]
                summary.validation += part["validation"]
                advance(len(chunk))
    finally:
        if pool is not None:
            pool.terminate()
    if not train_shards:
        raise ValueError(f"no usable samples in {source.path}: {summary.text(output)}")
    index = _write_indexes(store, val_store, enc, wanted, summary, train_shards, val_shards)
    return index, summary


def _same_settings(store: Store, output: str, source: Source, settings: Settings) -> dict[str, Any]:
    """The settings a preparation is resumed with must be those it began with; the first run
    records them."""
    wanted = {
        "settings": asdict(settings),
        "source": {"layout": source.layout, "path": local(source.path)},
    }
    if not store.exists(SETTINGS):
        store.write(SETTINGS, json.dumps(wanted, indent=1).encode())
        return wanted
    before = json.loads(store.read(SETTINGS))
    if before != wanted:
        changed = sorted(
            k
            for part in ("settings", "source")
            for k in set(before.get(part, {})) | set(wanted[part])
            if before.get(part, {}).get(k) != wanted[part].get(k)
        )
        raise ValueError(
            f"{output} was prepared with other settings ({', '.join(changed)} differ); "
            "prepare into another folder, or give the same settings to resume"
        )
    return wanted


def _write_indexes(
    store: Store,
    val_store: Store,
    enc: Encoders,
    wanted: dict[str, Any],
    summary: Summary,
    train_shards: list[dict[str, Any]],
    val_shards: list[dict[str, Any]],
) -> dict[str, Any]:
    """The training index (and the held-out split's): written last, so a store with an index
    holds every shard it names."""
    base = {
        "format": FORMAT,
        "latent_shape": list(enc.latent_shape),
        "text_length": enc.text_length,
        "text_dim": enc.text_dim,
        **enc.describe(),
        "source": wanted["source"],
        "skipped": dict(summary.skipped),
        "prepared_with": f"isoflop-train {__version__}",
    }
    if val_shards:
        val_index = {**base, "samples": summary.validation, "shards": val_shards}
        val_store.write("index.json", json.dumps(val_index, indent=1).encode())
    index = {**base, "samples": summary.train, "shards": train_shards}
    if val_shards:
        index["validation"] = "validation"
    store.write("index.json", json.dumps(index, indent=1).encode())
    return index


def _unusable(r: Record, enc: Encoders) -> str | None:
    """Why a record cannot be used, found before decoding it (no caption, no class); None: none."""
    if r.problem is not None:
        return r.problem
    if enc.classes is not None:
        ok = r.label is not None and 0 <= r.label < len(enc.classes)
        return None if ok else NO_LABEL
    if r.caption is None:
        return NO_CAPTION
    return EMPTY_CAPTION if not r.caption.strip() else None


def _encode_shard(
    chunk: list[Record],
    name: str,
    enc: Encoders,
    settings: Settings,
    store: Store,
    val_store: Store,
    pool: Any,
    batch_size: int,
) -> dict[str, Any]:
    """Decode, filter, encode and write one shard (and its validation part)."""
    skipped: dict[str, list[str]] = {}
    keep: list[Record] = []
    for r in chunk:
        reason = _unusable(r, enc)
        if reason is None:
            keep.append(r)
        else:
            skipped.setdefault(reason, []).append(r.key)
    jobs = [(r.key, r.image, r.path, settings.image_size) for r in keep]
    decoded = pool.map(decode, jobs, chunksize=4) if pool is not None else map(decode, jobs)
    pixels: dict[str, np.ndarray] = {}
    for key, image in decoded:
        if isinstance(image, str):
            skipped.setdefault(image, []).append(key)
        else:
            pixels[key] = image
    good = [r for r in keep if r.key in pixels]
    part: dict[str, Any] = {"skipped": skipped, "train": 0, "validation": 0}
    splits = {
        "train": [r for r in good if not held_out(r.key, settings.validation_fraction)],
        "validation": [r for r in good if held_out(r.key, settings.validation_fraction)],
    }
    for split, records in splits.items():
        if not records:
            continue
        latents, texts, masks = [], [], []
        for lo in range(0, len(records), batch_size):
            batch = records[lo : lo + batch_size]
            latents.append(enc.images(np.stack([pixels[r.key] for r in batch])))
            t, m = enc.text([r.caption for r in batch], [r.label for r in batch])
            texts.append(t)
            masks.append(m)
        buf = io.BytesIO()
        np.savez(
            buf,
            latents=np.concatenate(latents).astype(settings.dtype),
            text=np.concatenate(texts).astype(settings.dtype),
            mask=np.concatenate(masks),
            keys=np.array([r.key for r in records]),
        )
        (store if split == "train" else val_store).write(name, buf.getvalue())
        part[split] = len(records)
    return part
