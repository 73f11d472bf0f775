"""Data: the procedural dataset is seeded and truthful; shards round-trip locally and through S3."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from isoflop_trainer.data.datasets import (
    COLORS,
    TOKEN,
    TRAIN,
    VALIDATION,
    ProceduralShapes,
    Shards,
    open_dataset,
    write_shards,
)

SHAPE = (3, 16, 16)


def test_samples_are_pure_functions_of_seed_split_and_index() -> None:
    a = ProceduralShapes(SHAPE, 8, 16, seed=0)
    b = ProceduralShapes(SHAPE, 8, 16, seed=0)
    x, y = a.batch([5, 6, 7]), b.batch([7, 6, 5])
    assert torch.equal(x.latents[0], y.latents[2])
    assert torch.equal(x.text[2], y.text[0])
    val = ProceduralShapes(SHAPE, 8, 16, seed=0, split=VALIDATION)
    other = ProceduralShapes(SHAPE, 8, 16, seed=1)
    captions = [a.caption(i) for i in range(50)]
    assert captions != [val.caption(i) for i in range(50)]
    assert captions != [other.caption(i) for i in range(50)]
    assert len(set(captions)) > 40


def test_images_show_what_captions_say() -> None:
    ds = ProceduralShapes(SHAPE, 8, 16)
    b = ds.batch(list(range(40)))
    for i in range(40):
        _, color, shape, row, column, jy, jx = ds.describe(i)
        img = b.latents[i]
        fg = (img != img[:, 0, 0][:, None, None]).any(0)  # pixels that are not background
        assert fg.any(), ds.caption(i)
        ys, xs = torch.nonzero(fg, as_tuple=True)
        assert torch.allclose(img[:, ys[0], xs[0]], torch.tensor(COLORS[color]))
        cy, cx = (ys.float().mean() + 0.5) / 16, (xs.float().mean() + 0.5) / 16
        assert abs(float(cx) - {"left": 0.25, "center": 0.5, "right": 0.75}[column] - jx) < 0.1
        if shape != "triangle":  # a triangle's centroid sits below its box centre
            assert abs(float(cy) - {"top": 0.25, "middle": 0.5, "bottom": 0.75}[row] - jy) < 0.1
    small = [fg_area(b.latents[i]) for i in range(40) if ds.describe(i)[0] == "small"]
    large = [fg_area(b.latents[i]) for i in range(40) if ds.describe(i)[0] == "large"]
    assert np.mean(large) > 2 * np.mean(small)


def fg_area(img: torch.Tensor) -> int:
    return int((img != img[:, 0, 0][:, None, None]).any(0).sum())


def test_text_embeddings_come_from_a_frozen_table() -> None:
    a, b = ProceduralShapes(SHAPE, 8, 16, seed=0), ProceduralShapes(SHAPE, 8, 16, seed=9)
    assert torch.equal(a.table, b.table)  # the "text encoder" does not depend on the trial seed
    batch = a.batch([0])
    assert batch.mask[0].sum() == 5  # five caption words
    assert torch.count_nonzero(batch.text[0, 5:]) == 0  # padding
    ids = [TOKEN[word] for word in a.caption(0).split()]
    assert torch.equal(batch.text[0, :5], a.table[ids] + a.positions[:5])  # embedding + position
    short = ProceduralShapes(SHAPE, 3, 16).batch([0, 1])  # text_length under 5: truncated
    assert short.text.shape == (2, 3, 16)
    assert bool(short.mask.all())


def test_local_shards_round_trip_and_stream_in_seeded_order(tmp_path: Path) -> None:
    source = ProceduralShapes(SHAPE, 8, 16)
    index = write_shards(
        str(tmp_path / "shards"), source, samples=50, shard_size=16, dtype="float32"
    )
    assert [s["samples"] for s in index["shards"]] == [16, 16, 16, 2]
    shards = Shards(f"file://{tmp_path / 'shards'}", seed=3)
    assert len(shards) == 50
    epoch = shards.batch(list(range(50)))
    original = source.batch(list(range(50)))
    # one epoch is a permutation of the samples
    got = sorted(map(tuple, epoch.latents.flatten(1).tolist()))
    assert got == sorted(map(tuple, original.latents.flatten(1).tolist()))
    assert shards.reads == 4  # streamed shard by shard, each read once
    again = Shards(str(tmp_path / "shards"), seed=3).batch([7, 8, 60])
    assert torch.equal(again.latents[:2], epoch.latents[7:9])
    assert not torch.equal(again.latents[2], epoch.latents[10])  # epoch 2 is reshuffled


def test_shards_through_a_real_s3_endpoint(bucket: str) -> None:
    source = ProceduralShapes(SHAPE, 8, 16)
    write_shards(f"s3://{bucket}/train", source, samples=20, shard_size=8)
    ds = open_dataset(f"s3://{bucket}/train", SHAPE, 8, 16, seed=0, split=TRAIN)
    assert len(ds) == 20
    b = ds.batch(list(range(20)))
    ref = source.batch(list(range(20)))
    assert torch.allclose(
        torch.sort(b.latents.flatten(1).sum(1)).values,
        torch.sort(ref.latents.half().float().flatten(1).sum(1)).values,
    )


def test_shard_errors_name_the_problem(tmp_path: Path, bucket: str) -> None:
    with pytest.raises(FileNotFoundError, match="no shard index at"):
        Shards(str(tmp_path / "nothing"))
    with pytest.raises(FileNotFoundError, match=f"no shard index at s3://{bucket}/missing"):
        Shards(f"s3://{bucket}/missing")
    write_shards(str(tmp_path / "s"), ProceduralShapes(SHAPE, 8, 16), samples=4, shard_size=4)
    with pytest.raises(ValueError, match=r"the trial expects \(\(4, 32, 32\), 8, 16\)"):
        open_dataset(str(tmp_path / "s"), (4, 32, 32), 8, 16)
    with pytest.raises(ValueError, match="unknown procedural dataset 'faces'"):
        open_dataset("procedural://faces", SHAPE, 8, 16)


def test_check_data_says_what_a_launcher_needs_in_one_sentence(tmp_path: Path) -> None:
    """`isoflop-train check-data`, the operator's data check Job: JSON on success, exit 65 and
    one sentence (to stderr and the termination log) otherwise."""
    write_shards(str(tmp_path / "s"), ProceduralShapes(SHAPE, 8, 16), samples=12, shard_size=5)
    log = tmp_path / "termination-log"
    log.touch()  # Kubernetes mounts it; the trainer writes only where it exists

    def check(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "isoflop_trainer.cli", "check-data"]
        return subprocess.run(
            [*command, "--termination-log", str(log), *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    shape = ["--latent-shape", "3", "16", "16", "--text-length", "8"]
    ok = check("--data", str(tmp_path / "s"), *shape, "--text-dim", "16")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout) == {
        "status": "succeeded",
        "samples": 12,
        "validation_samples": None,
    }
    assert json.loads(log.read_text())["samples"] == 12
    wrong = check("--data", str(tmp_path / "s"), *shape, "--text-dim", "32")
    assert wrong.returncode == 65
    sentence = (
        f"data.source {tmp_path / 's'} holds latents 3x16x16, text 8x16, but the spec asks for "
        "latents 3x16x16, text 8x32 (check data.textDim)"
    )
    assert wrong.stderr == f"isoflop-train: error: {sentence}\n"
    assert json.loads(log.read_text()) == {
        "status": "failed",
        "error": sentence,
        "permanent": True,
    }
    vae = check("--data", str(tmp_path / "s"), *shape, "--text-dim", "16", "--need-vae")
    assert vae.returncode == 65
    assert "names none: set evaluation.fid.vae" in vae.stderr
    gone = check("--data", str(tmp_path / "nothing"), *shape, "--text-dim", "16")
    assert gone.returncode == 65
    assert gone.stderr.startswith(
        f"isoflop-train: error: data.source cannot be used: no shard index at {tmp_path}"
    )


def test_s3_errors_say_whether_a_retry_can_help() -> None:
    """Missing or denied data fails a trial once; an unreachable store is retried."""
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    from isoflop_trainer.data.store import s3_error

    def client(code: str) -> ClientError:
        return ClientError({"Error": {"Code": code, "Message": code}}, "GetObject")

    assert type(s3_error(client("NoSuchKey"), "m")) is FileNotFoundError
    assert type(s3_error(client("NoSuchBucket"), "m")) is FileNotFoundError
    assert type(s3_error(client("AccessDenied"), "m")) is PermissionError
    assert type(s3_error(NoCredentialsError(), "m")) is PermissionError
    assert type(s3_error(client("SlowDown"), "m")) is ConnectionError
    assert type(s3_error(client("InternalError"), "m")) is ConnectionError
    unreachable = EndpointConnectionError(endpoint_url="http://127.0.0.1:9")
    assert type(s3_error(unreachable, "m")) is ConnectionError


def test_an_s3_location_botocore_refuses_is_one_sentence_naming_the_field() -> None:
    """botocore refuses a bucket name before any request (ParamValidationError): that is a bad
    value, never a store to retry, and the check names the field (before: ConnectionError)."""
    from isoflop_trainer.data.store import Store, check_shards

    with pytest.raises(ValueError, match=r'is not an S3 location \(Invalid bucket name "a b"\)$'):
        Store("s3://a b/é").read("index.json")
    with pytest.raises(ValueError, match=r"^data.source cannot be used: s3://a b/é/index") as err:
        check_shards("s3://a b/é", None, (4, 32, 32), 77, 768)
    assert "\n" not in str(err.value)
