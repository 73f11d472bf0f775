"""Training data: a procedural text-to-image dataset and pre-encoded shards (local or S3).

Every dataset is random-access by a global sample index, so a trial's data position is one integer
(samples consumed), ranks take disjoint slices of each global batch, and a resumed or re-sharded
run sees exactly the same samples. The shard format is described in `isoflop_trainer.data.store` and
docs/tasks/data.md; `isoflop_trainer.data.prepare` writes it from images and captions.
"""

from __future__ import annotations

import io
import json
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from isoflop_trainer.components.failures import DataError
from isoflop_trainer.config import PROCEDURAL_DATASETS, TrainConfig
from isoflop_trainer.data.store import FORMAT, ShardIndex, Store, atomic_write, read_index
from isoflop_trainer.models.dit import sincos_1d

__all__ = ["FORMAT", "Store", "atomic_write"]  # re-exported: the trainer's one data module
TRAIN, VALIDATION = 0, 1

SIZES = {"small": 0.16, "large": 0.3}  # radius as a fraction of the image side
COLORS = {
    "red": (1.0, -0.8, -0.8),
    "green": (-0.8, 1.0, -0.8),
    "blue": (-0.8, -0.8, 1.0),
    "yellow": (1.0, 1.0, -0.8),
    "cyan": (-0.8, 1.0, 1.0),
    "magenta": (1.0, -0.8, 1.0),
    "white": (1.0, 1.0, 1.0),
}
SHAPES = ("circle", "square", "triangle")
ROWS = {"top": 0.25, "middle": 0.5, "bottom": 0.75}
COLUMNS = {"left": 0.25, "center": 0.5, "right": 0.75}
VOCAB = ["<pad>", *SIZES, *COLORS, *SHAPES, *ROWS, *COLUMNS]
TOKEN = {w: i for i, w in enumerate(VOCAB)}


@dataclass
class Batch:
    latents: torch.Tensor  # (B, C, H, W)
    text: torch.Tensor  # (B, L, E)
    mask: torch.Tensor  # (B, L) bool, True for real tokens

    def pin_memory(self) -> Batch:
        """Page-locked copies (the data loader calls this with pin_memory=True)."""
        return Batch(self.latents.pin_memory(), self.text.pin_memory(), self.mask.pin_memory())


class Dataset(Protocol):
    latent_shape: tuple[int, int, int]
    text_length: int
    text_dim: int

    def __len__(self) -> int: ...  # samples per epoch (procedural: its nominal epoch)

    def batch(self, indices: list[int]) -> Batch: ...


class ProceduralShapes:
    """Coloured shapes at positions and sizes their captions describe; infinite and seeded.

    Sample i of a split is a pure function of (seed, split, i). Captions are token ids turned into
    embeddings by a frozen, seeded table plus sin-cos positions, like a text encoder's output.
    """

    EPOCH = 1_000_000  # nominal epoch, for reporting only: the stream never repeats

    def __init__(
        self,
        latent_shape: tuple[int, int, int],
        text_length: int,
        text_dim: int,
        seed: int = 0,
        split: int = TRAIN,
    ) -> None:
        self.latent_shape, self.text_length, self.text_dim = latent_shape, text_length, text_dim
        self.seed, self.split = seed, split
        g = torch.Generator().manual_seed(1234)  # the "text encoder" is the same for every seed
        table = torch.randn(len(VOCAB), text_dim, generator=g)
        table[0] = 0.0  # padding
        self.table = table
        self.positions = sincos_1d(text_dim, torch.arange(text_length).float()) * 0.5
        c = latent_shape[0]
        rgb = torch.tensor(list(COLORS.values()))
        extra = torch.rand(len(COLORS), max(c - 3, 0), generator=g) * 2 - 1
        self.palette = torch.cat([rgb, extra], dim=1)[:, :c]  # (colors, C)

    def __len__(self) -> int:
        return self.EPOCH

    def describe(self, i: int) -> tuple[str, str, str, str, str, float, float]:
        """(size, color, shape, row, column, jitter_y, jitter_x) of sample i."""
        rng = np.random.default_rng([self.seed, self.split, i])
        pick = rng.integers(0, [len(SIZES), len(COLORS), len(SHAPES), len(ROWS), len(COLUMNS)])
        jy, jx = rng.uniform(-0.06, 0.06, size=2)
        return (
            list(SIZES)[pick[0]],
            list(COLORS)[pick[1]],
            SHAPES[pick[2]],
            list(ROWS)[pick[3]],
            list(COLUMNS)[pick[4]],
            float(jy),
            float(jx),
        )

    def caption(self, i: int) -> str:
        size, color, shape, row, column, *_ = self.describe(i)
        return f"{size} {color} {shape} {row} {column}"

    def batch(self, indices: list[int]) -> Batch:
        c, h, w = self.latent_shape
        specs = [self.describe(i) for i in indices]
        n = len(specs)
        cy = torch.tensor([ROWS[s[3]] + s[5] for s in specs]).view(n, 1, 1)
        cx = torch.tensor([COLUMNS[s[4]] + s[6] for s in specs]).view(n, 1, 1)
        r = torch.tensor([SIZES[s[0]] for s in specs]).view(n, 1, 1)
        kind = torch.tensor([SHAPES.index(s[2]) for s in specs]).view(n, 1, 1)
        ys = (torch.arange(h).float() + 0.5).view(1, h, 1) / h
        xs = (torch.arange(w).float() + 0.5).view(1, 1, w) / w
        dy, dx = ys - cy, xs - cx
        circle = dy**2 + dx**2 <= r**2
        square = (dy.abs() <= r * 0.85) & (dx.abs() <= r * 0.85)
        triangle = (dy.abs() <= r) & (dx.abs() <= (dy + r) / 2)
        mask = torch.where(kind == 0, circle, torch.where(kind == 1, square, triangle))  # (n, h, w)
        color = self.palette[[list(COLORS).index(s[1]) for s in specs]]  # (n, C)
        background = -torch.ones(n, c, h, w) * 0.6
        latents = torch.where(mask[:, None], color[:, :, None, None], background)
        # a caption is 5 words; the rest of the text_length tokens are padding (zero embeddings),
        # so only the first columns are computed (the whole (n, L, E) tensor cost 15 ms at 128)
        words = min(5, self.text_length)
        ids = torch.tensor([[TOKEN[str(w)] for w in s[:words]] for s in specs], dtype=torch.long)
        tokens = torch.zeros(n, self.text_length, dtype=torch.long)
        tokens[:, :words] = ids.view(n, words)
        text = torch.zeros(n, self.text_length, self.text_dim)
        text[:, :words] = self.table[ids] + self.positions[:words]
        return Batch(latents, text, tokens > 0)


# ------------------------------------------------------------------------------------------------
# shards


class Shards:
    """Pre-encoded shards, streamed: each epoch visits shards in a seeded order and samples within
    a shard in a seeded order, so consecutive indices come from one shard (few reads, small cache).
    """

    def __init__(self, uri: str | ShardIndex, seed: int = 0, cache: int = 4) -> None:
        index = read_index(uri) if isinstance(uri, str) else uri
        self.index = index
        self.store = Store(index.uri)
        self.latent_shape = index.latent_shape
        self.text_length, self.text_dim = index.text_length, index.text_dim
        self.names = [name for name, _ in index.shards]
        self.sizes = np.array([n for _, n in index.shards])
        self.seed, self.capacity = seed, cache
        self.cache: OrderedDict[str, dict[str, np.ndarray]] = OrderedDict()
        self.reads = 0

    def __len__(self) -> int:
        return int(self.sizes.sum())

    def reset(self) -> None:
        """Drop the shard cache and the S3 client (for a forked loader worker)."""
        self.cache.clear()
        self.store.reset()

    def _locate(self, index: int) -> tuple[int, int]:
        """Global sample index -> (shard, row) for the epoch it falls in."""
        epoch, pos = divmod(index, len(self))
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.names))
        ends = np.cumsum(self.sizes[order])
        k = int(np.searchsorted(ends, pos, side="right"))
        shard = int(order[k])
        offset = pos - (int(ends[k - 1]) if k else 0)
        rows = np.random.default_rng([self.seed, epoch, shard]).permutation(self.sizes[shard])
        return shard, int(rows[offset])

    def _load(self, shard: int) -> dict[str, np.ndarray]:
        name = self.names[shard]
        if name in self.cache:
            self.cache.move_to_end(name)
            return self.cache[name]
        with np.load(io.BytesIO(self.store.read(name))) as z:
            arrays = {k: z[k] for k in ("latents", "text", "mask")}
        self.reads += 1
        self.cache[name] = arrays
        while len(self.cache) > self.capacity:
            self.cache.popitem(last=False)
        return arrays

    def batch(self, indices: list[int]) -> Batch:
        lat, txt, msk = [], [], []
        for i in indices:
            shard, row = self._locate(i)
            arrays = self._load(shard)
            lat.append(arrays["latents"][row])
            txt.append(arrays["text"][row])
            msk.append(arrays["mask"][row])
        return Batch(
            torch.from_numpy(np.stack(lat)).float(),
            torch.from_numpy(np.stack(txt)).float(),
            torch.from_numpy(np.stack(msk)).bool(),
        )


def write_shards(
    uri: str,
    source: Dataset,
    samples: int,
    shard_size: int = 1024,
    dtype: str = "float16",
    start: int = 0,
) -> dict[str, Any]:
    """Encode `samples` samples of `source` into shards and an index (what `prepare` runs)."""
    store = Store(uri)
    shards = []
    for k in range(math.ceil(samples / shard_size)):
        lo, hi = start + k * shard_size, start + min((k + 1) * shard_size, samples)
        b = source.batch(list(range(lo, hi)))
        buf = io.BytesIO()
        np.savez(
            buf,
            latents=b.latents.numpy().astype(dtype),
            text=b.text.numpy().astype(dtype),
            mask=b.mask.numpy(),
        )
        name = f"shard-{k:05d}.npz"
        store.write(name, buf.getvalue())
        shards.append({"name": name, "samples": hi - lo})
    index = {
        "format": FORMAT,
        "latent_shape": list(source.latent_shape),
        "text_length": source.text_length,
        "text_dim": source.text_dim,
        "samples": samples,
        "shards": shards,
        "source": {"layout": "procedural"},
    }
    store.write("index.json", json.dumps(index, indent=1).encode())
    return index


def open_dataset(
    uri: str,
    latent_shape: tuple[int, int, int],
    text_length: int,
    text_dim: int,
    seed: int = 0,
    split: int = TRAIN,
) -> Dataset:
    """procedural://NAME, or shards under file://, a plain path, or s3://.

    The validation split of shards is the held-out split their index names (`prepare
    --validation-fraction`); an index without one is its own validation set.
    """
    if uri.startswith("procedural://"):
        name = uri.removeprefix("procedural://").split("?")[0]
        if name not in (*PROCEDURAL_DATASETS, ""):
            known = ", ".join(PROCEDURAL_DATASETS)
            raise ValueError(f"unknown procedural dataset {name!r} (known: {known})")
        return ProceduralShapes(latent_shape, text_length, text_dim, seed, split)
    index = read_index(uri)
    if split == VALIDATION and index.validation_uri is not None:
        index = read_index(index.validation_uri)
    expected = (tuple(latent_shape), text_length, text_dim)
    found = (tuple(index.latent_shape), index.text_length, index.text_dim)
    if found != expected:
        raise ValueError(f"{uri} holds latents/text of shape {found}, the trial expects {expected}")
    return Shards(index, seed=seed)


def open_trial_data(cfg: TrainConfig, split: int) -> Dataset:
    """A trial's training or validation data; a DataError when it is missing or mismatched (an
    unreachable store, a ConnectionError, is worth a retry and stays one)."""
    shape = (cfg.model.latent_channels, cfg.model.latent_height, cfg.model.latent_width)
    uri = (cfg.validation_data or cfg.data) if split == VALIDATION else cfg.data
    try:
        return open_dataset(uri, shape, cfg.model.text_length, cfg.model.text_dim, cfg.seed, split)
    except (FileNotFoundError, PermissionError, ValueError) as err:
        raise DataError(str(err)) from None
