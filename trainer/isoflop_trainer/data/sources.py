"""Images with captions (or class labels) from the layouts people keep them in (torch-free).

Layouts, each read in a fixed order so that a prepare run can be resumed shard by shard:

    imagefolder   a folder of images with captions in metadata.jsonl ({"file_name": ..., "text":
                  ...} per line, as Hugging Face's "imagefolder") or in a sidecar NAME.txt
    classfolder   a folder per class, images inside: class labels instead of captions
    webdataset    WebDataset .tar shards (a .tar, a folder of them, or a {000..009} pattern):
                  samples grouped by key, image in jpg/jpeg/png/webp, caption in txt or json
    hf            a Hugging Face `datasets` dataset saved to disk (save_to_disk), or parquet files
                  (a .parquet or a folder of them) with an image column and a caption or label
                  column

Reading gives records with the image's encoded bytes; decoding (`load_image`) happens in prepare's
worker processes.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

Layout = Literal["imagefolder", "classfolder", "webdataset", "hf"]
LAYOUTS: tuple[Layout, ...] = ("imagefolder", "classfolder", "webdataset", "hf")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
CAPTION_KEYS = ("text", "caption", "captions", "prompt")
LABEL_KEYS = ("label", "cls", "class")

# reasons a record is left out; prepare counts them and reports every one
UNREADABLE = "unreadable image"
EMPTY_CAPTION = "empty caption"
NO_CAPTION = "no caption"
NO_LABEL = "no label"
MISSING_FILE = "missing image file"


@dataclass(frozen=True)
class Record:
    key: str  # where the sample came from, unique in the source
    image: bytes | None = None  # the encoded image, when the source holds it inline
    path: str | None = None  # else the image file, read by the decoding worker
    caption: str | None = None
    label: int | None = None
    problem: str | None = None  # known before decoding: the record is skipped with this reason


class Source(Protocol):
    layout: Layout
    path: str
    classes: list[str] | None  # class names (label i is classes[i]); None: captions

    def size(self) -> int | None: ...  # records; None when unknown before reading (webdataset)

    def records(self) -> Iterator[Record]: ...


def _images(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _caption(value: Any) -> str | None:
    if isinstance(value, list):  # several captions: the first, as the paper's data had one
        value = value[0] if value else None
    return None if value is None else str(value)


@dataclass
class ImageFolder:
    path: str
    caption_key: str | None = None
    layout: Layout = "imagefolder"
    classes: list[str] | None = None
    _rows: list[tuple[str, str | None]] = field(default_factory=list)  # (file, caption)

    def __post_init__(self) -> None:
        root = Path(self.path)
        meta = root / "metadata.jsonl"
        if meta.exists():
            rows = []
            for n, line in enumerate(meta.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    name = str(row["file_name"])
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise ValueError(
                        f"{meta} line {n} is not a JSON object with a file_name"
                    ) from None
                key = self.caption_key or next((k for k in CAPTION_KEYS if k in row), None)
                rows.append((name, _caption(row.get(key)) if key else None))
            self._rows = sorted(rows)
        else:
            self._rows = []
            for image in _images(root):
                side = image.with_suffix(".txt")
                text = side.read_text(errors="replace").strip() if side.exists() else None
                self._rows.append((str(image.relative_to(root)), text))

    def size(self) -> int | None:
        return len(self._rows)

    def records(self) -> Iterator[Record]:
        root = Path(self.path)
        for name, caption in self._rows:
            yield Record(name, path=str(root / name), caption=caption)


@dataclass
class ClassFolder:
    path: str
    layout: Layout = "classfolder"
    classes: list[str] | None = None
    _files: list[tuple[Path, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        root = Path(self.path)
        folders = sorted(p for p in root.iterdir() if p.is_dir())
        self.classes = [p.name for p in folders]
        self._files = [(f, i) for i, d in enumerate(folders) for f in _images(d)]
        if not self.classes:
            raise ValueError(f"{root} has no class folders")

    def size(self) -> int | None:
        return len(self._files)

    def records(self) -> Iterator[Record]:
        root = Path(self.path)
        for path, label in self._files:
            yield Record(str(path.relative_to(root)), path=str(path), label=label)


@dataclass
class WebDatasetTars:
    path: str
    caption_key: str | None = None
    layout: Layout = "webdataset"
    classes: list[str] | None = None

    def urls(self) -> list[str]:
        from webdataset.tariterators import braceexpand

        p = Path(self.path)
        if p.is_dir():
            found = sorted(str(t) for t in p.glob("*.tar"))
        else:
            found = list(braceexpand.braceexpand(self.path))
        if not found:
            raise ValueError(f"no .tar shards at {self.path}")
        return found

    def size(self) -> int | None:
        return None

    def records(self) -> Iterator[Record]:
        import webdataset as wds

        for sample in wds.WebDataset(self.urls(), shardshuffle=False, empty_check=False):
            key = f"{Path(sample['__url__']).name}/{sample['__key__']}"
            image = next((sample[s] for s in ("jpg", "jpeg", "png", "webp") if s in sample), None)
            caption = None
            if "txt" in sample:
                caption = bytes(sample["txt"]).decode("utf-8", "replace")
            elif "json" in sample:
                meta = json.loads(sample["json"])
                want = self.caption_key or next((k for k in CAPTION_KEYS if k in meta), None)
                caption = _caption(meta.get(want)) if want else None
            label = int(bytes(sample["cls"]).decode()) if "cls" in sample else None
            if image is None:
                yield Record(key, problem=UNREADABLE)
            else:
                yield Record(key, bytes(image), caption=caption, label=label)


@dataclass
class HFDataset:
    path: str
    caption_key: str | None = None
    image_key: str | None = None
    layout: Layout = "hf"
    classes: list[str] | None = None
    _ds: Any = None
    _caption: str | None = None
    _label: str | None = None

    def __post_init__(self) -> None:
        import datasets

        p = Path(self.path)
        parquet = [p] if p.suffix == ".parquet" else sorted(p.glob("**/*.parquet"))
        if (p / "dataset_info.json").exists() or (p / "state.json").exists():
            ds = datasets.load_from_disk(str(p))
            if isinstance(ds, datasets.DatasetDict):  # the train split of a saved DatasetDict
                ds = ds["train"] if "train" in ds else next(iter(ds.values()))
        elif parquet:
            ds = datasets.Dataset.from_parquet([str(f) for f in parquet])
        else:
            raise ValueError(f"{p} is neither a saved datasets dataset nor parquet files")
        features = ds.features
        image = self.image_key or next(
            (k for k, f in features.items() if isinstance(f, datasets.Image)),
            "image" if "image" in features else None,
        )
        if image is None or image not in features:
            raise ValueError(f"{p} has no image column (columns: {', '.join(features)})")
        self._caption = self.caption_key or next((k for k in CAPTION_KEYS if k in features), None)
        self._label = next((k for k in LABEL_KEYS if k in features), None)
        if self._label and isinstance(features[self._label], datasets.ClassLabel):
            self.classes = list(features[self._label].names)
        if isinstance(features[image], datasets.Image):
            ds = ds.cast_column(image, datasets.Image(decode=False))
        self.image_key, self._ds = image, ds

    def size(self) -> int | None:
        return len(self._ds)

    def records(self) -> Iterator[Record]:
        for i, row in enumerate(self._ds):
            key = f"{i:08d}"
            cell = row[self.image_key]
            data = cell.get("bytes") if isinstance(cell, dict) else cell
            if data is None and isinstance(cell, dict) and cell.get("path"):
                data = _read(Path(cell["path"]))
            caption = _caption(row.get(self._caption)) if self._caption else None
            label = row.get(self._label) if self._label else None
            if data is None:
                yield Record(key, problem=UNREADABLE)
            else:
                yield Record(key, bytes(data), caption=caption, label=label)


def detect(path: str) -> Layout:
    """The layout of a path, from what it holds."""
    p = Path(path)
    if not p.exists() and "{" in path:
        return "webdataset"
    if not p.exists():
        raise FileNotFoundError(f"no dataset at {path}")
    if p.suffix == ".tar" or (p.is_dir() and any(p.glob("*.tar"))):
        return "webdataset"
    if p.suffix == ".parquet" or (p.is_dir() and any(p.glob("**/*.parquet"))):
        return "hf"
    if p.is_dir() and ((p / "dataset_info.json").exists() or (p / "state.json").exists()):
        return "hf"
    if not p.is_dir():
        raise ValueError(f"{path} is not a folder, a .tar or a .parquet file")
    if (p / "metadata.jsonl").exists():
        return "imagefolder"
    if any(f.suffix.lower() in IMAGE_SUFFIXES for f in p.iterdir() if f.is_file()):
        return "imagefolder"
    if any(d.is_dir() for d in p.iterdir()):
        return "classfolder"
    raise ValueError(f"{path} holds no images")


def open_source(
    path: str, layout: Layout | Literal["auto"] = "auto", caption_key: str | None = None
) -> Source:
    """The source at `path` in `layout` (auto: detected)."""
    chosen = detect(path) if layout == "auto" else layout
    if chosen == "imagefolder":
        return ImageFolder(path, caption_key)
    if chosen == "classfolder":
        return ClassFolder(path)
    if chosen == "webdataset":
        return WebDatasetTars(path, caption_key)
    if chosen == "hf":
        return HFDataset(path, caption_key)
    raise ValueError(f"unknown layout {layout!r} (known: auto, {', '.join(LAYOUTS)})")


def decode(item: tuple[str, bytes | None, str | None, int]) -> tuple[str, np.ndarray | str]:
    """(key, image bytes or None, file or None, size) -> (key, (3, size, size) uint8 or the
    reason it is skipped). What prepare's worker processes run: torch-free, cheap to start."""
    key, data, path, size = item
    if data is None:
        data = _read(Path(path)) if path else None
        if data is None:
            return key, MISSING_FILE
    try:
        return key, load_image(data, size)
    except Exception:  # PIL raises many types for a bad file; all mean "unreadable"
        return key, UNREADABLE


def load_image(data: bytes, size: int) -> np.ndarray:
    """An encoded image as (3, size, size) uint8: EXIF orientation applied, RGB, the shorter side
    resized to `size` (bicubic) and the centre cropped square. Deterministic; raises on a file PIL
    cannot read."""
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(data)) as img:
        img.load()
        rgb = ImageOps.exif_transpose(img).convert("RGB")
    fitted = ImageOps.fit(rgb, (size, size), method=Image.Resampling.BICUBIC)
    return np.asarray(fitted, dtype=np.uint8).transpose(2, 0, 1).copy()
