"""Objects under a local folder or an S3 prefix, and the index of a shard dataset (torch-free).

The launcher (`isoflop validate`, `isoflop run`, the operator) reads a dataset's index through this
module to check it against a sweep before any trial starts; the trainer streams the shards it lists.
The format is documented in docs/tasks/data.md ("Bring your own data"); in short:

    PREFIX/index.json   {"format": "isoflop-shards/v1", "latent_shape": [C, H, W],
                         "text_length": L, "text_dim": E, "samples": n,
                         "shards": [{"name": "shard-00000.npz", "samples": n0}, ...],
                         "validation": "validation",      (optional: a held-out split below it)
                         "vae": {...}, "text_encoder": {...} or "classes": [...],
                         "image_size": S, "skipped": {"reason": count}, "source": {...}}
    PREFIX/<name>.npz   latents (n, C, H, W) float16/32, text (n, L, E) float16/32, mask (n, L)
                        bool, and keys (n,) str: where each sample came from

PREFIX is a local folder (file:///path or a plain path) or s3://bucket/prefix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

FORMAT = "isoflop-shards/v1"
# sysexits' EX_DATAERR: a failure no retry can mend. The trial's data (or a model it names) is
# missing or does not fit the sweep, its config cannot run, or it fails the same way every time
# (training is deterministic: a NaN, a divergence, out of memory at the first step). The trainer
# exits with it; the runner and the Job's podFailurePolicy fail the trial at once.
PERMANENT_EXIT_CODE = 65


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write a file whole or not at all: readers never see half of it (a rename in one folder),
    and a failed write (a full disk) leaves the old file and no temporary one behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class Store:
    """Read and write objects under a local folder or an S3 prefix.

    S3 is configured the standard way (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION and,
    for MinIO or another S3-compatible store, AWS_ENDPOINT_URL); the client is made on first use.
    """

    def __init__(self, uri: str) -> None:
        parsed = urlparse(uri)
        self.uri = uri
        self.s3 = parsed.scheme == "s3"
        self._client: Any = None
        if self.s3:
            self.bucket, self.prefix = parsed.netloc, parsed.path.lstrip("/").rstrip("/")
        else:
            self.root = Path(parsed.path if parsed.scheme == "file" else uri)

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3

            self._client = boto3.client("s3")
        return self._client

    def reset(self) -> None:
        """Forget the client (a forked loader worker makes its own)."""
        self._client = None

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def read(self, name: str) -> bytes:
        if self.s3:
            try:
                obj = self.client.get_object(Bucket=self.bucket, Key=self.key(name))
                body: bytes = obj["Body"].read()
            except Exception as err:  # botocore raises several types: sort them by what helps
                where = f"s3://{self.bucket}/{self.key(name)}"
                if type(err).__name__ == "ParamValidationError":  # refused before any request
                    said = str(err).splitlines()[-1].split(":")[0]  # 'Invalid bucket name "a b"'
                    raise ValueError(f"{where} is not an S3 location ({said})") from None
                raise s3_error(err, f"cannot read {where}: {err}") from err
            return body
        path = self.root / name
        try:
            return path.read_bytes()
        except OSError as err:
            raise FileNotFoundError(f"cannot read {path}: {err.strerror or err}") from err

    def write(self, name: str, data: bytes) -> None:
        if self.s3:
            self.client.put_object(Bucket=self.bucket, Key=self.key(name), Body=data)
            return
        atomic_write(self.root / name, data)

    def exists(self, name: str) -> bool:
        if self.s3:
            try:
                self.client.head_object(Bucket=self.bucket, Key=self.key(name))
            except Exception:
                return False
            return True
        return (self.root / name).exists()

    def delete(self, name: str) -> None:
        if self.s3:
            self.client.delete_object(Bucket=self.bucket, Key=self.key(name))
        else:
            (self.root / name).unlink(missing_ok=True)

    def child(self, name: str) -> Store:
        """The store of a folder or prefix below this one."""
        return Store(f"{self.uri.rstrip('/')}/{name}")


MISSING_CODES = {"NoSuchKey", "NoSuchBucket", "404", "NotFound"}
DENIED_CODES = {"AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"}


def s3_error(err: Exception, message: str) -> OSError:
    """A botocore error as what a caller can act on: FileNotFoundError (missing) and
    PermissionError (denied, no credentials) do not mend by retrying; ConnectionError (an
    unreachable endpoint, throttling, a server error) may."""
    code = str(getattr(err, "response", {}).get("Error", {}).get("Code", ""))
    if code in MISSING_CODES:
        return FileNotFoundError(message)
    if code in DENIED_CODES or type(err).__name__ in (
        "NoCredentialsError",
        "PartialCredentialsError",
    ):
        return PermissionError(message)
    return ConnectionError(message)


def is_shards(uri: str) -> bool:
    """Whether a data URI names shards (anything but a procedural:// dataset)."""
    return not uri.startswith("procedural://")


@dataclass(frozen=True)
class ShardIndex:
    """What index.json says of a shard dataset."""

    uri: str
    latent_shape: tuple[int, int, int]
    text_length: int
    text_dim: int
    shards: tuple[tuple[str, int], ...]  # (name, samples)
    validation: str | None = None  # a sub-prefix holding the held-out split
    extra: dict[str, Any] = field(default_factory=dict)  # vae, text_encoder, skipped, ...

    @property
    def samples(self) -> int:
        return sum(n for _, n in self.shards)

    @property
    def validation_uri(self) -> str | None:
        return f"{self.uri.rstrip('/')}/{self.validation}" if self.validation else None

    def describe(self) -> str:
        c, h, w = self.latent_shape
        return f"latents {c}x{h}x{w}, text {self.text_length}x{self.text_dim}"

    @classmethod
    def parse(cls, uri: str, raw: bytes) -> ShardIndex:
        try:
            index = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ValueError(f"{uri}/index.json is not JSON") from None
        if not isinstance(index, dict) or index.get("format") != FORMAT:
            raise ValueError(f"{uri}/index.json is not in the {FORMAT} format")
        try:
            c, h, w = (int(v) for v in index["latent_shape"])
            shards = tuple((str(s["name"]), int(s["samples"])) for s in index["shards"])
            parsed = cls(
                uri=uri,
                latent_shape=(c, h, w),
                text_length=int(index["text_length"]),
                text_dim=int(index["text_dim"]),
                shards=shards,
                validation=index.get("validation"),
                extra={k: v for k, v in index.items() if k not in _CORE},
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{uri}/index.json is malformed: {err!r}") from None
        if not shards or parsed.samples == 0:
            raise ValueError(f"{uri} holds no samples")
        return parsed


_CORE = {"format", "latent_shape", "text_length", "text_dim", "shards", "validation"}


def read_index(uri: str) -> ShardIndex:
    """The index of the shards under `uri`; FileNotFoundError or ValueError in one sentence."""
    try:
        raw = Store(uri).read("index.json")
    except FileNotFoundError as err:
        raise FileNotFoundError(f"no shard index at {uri}: {err}") from None
    except PermissionError as err:
        raise PermissionError(f"no access to the shard index at {uri}: {err}") from None
    return ShardIndex.parse(uri, raw)


def _mismatch(
    index: ShardIndex, what: str, latent_shape: tuple[int, int, int], length: int, dim: int
) -> str | None:
    want = (tuple(latent_shape), length, dim)
    have = (index.latent_shape, index.text_length, index.text_dim)
    if want == have:
        return None
    names = ("data.latentShape", "data.textLength", "data.textDim")
    fields = [name for name, a, b in zip(names, want, have, strict=True) if a != b]
    c, h, w = latent_shape
    return (
        f"{what} {index.uri} holds {index.describe()}, but the spec asks for latents {c}x{h}x{w}, "
        f"text {length}x{dim} (check {', '.join(fields)})"
    )


def check_shards(
    source: str,
    validation: str | None,
    latent_shape: tuple[int, int, int],
    text_length: int,
    text_dim: int,
    need_vae: bool = False,
) -> tuple[ShardIndex, ShardIndex | None]:
    """The training and validation indexes of a sweep's data, checked against its spec's shapes;
    ValueError in one sentence (phrased in the spec's field names) when they are missing or do
    not fit. `validation` None: the held-out split the index names, if any."""

    def opened(uri: str, what: str) -> ShardIndex:
        try:
            index = read_index(uri)
        except (FileNotFoundError, PermissionError, ValueError) as err:
            raise ValueError(f"{what} cannot be used: {err}") from None
        if (problem := _mismatch(index, what, latent_shape, text_length, text_dim)) is not None:
            raise ValueError(problem)
        return index

    train = opened(source, "data.source")
    val_uri = validation or train.validation_uri
    what = "data.validationSource" if validation else "the held-out split"
    val = opened(val_uri, what) if val_uri is not None else None
    if need_vae and "vae" not in train.extra:
        raise ValueError(
            f"FID decodes latents with a VAE, and {train.uri}/index.json names none: "
            "set evaluation.fid.vae"
        )
    return train, val
