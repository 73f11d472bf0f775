"""Real data in, the paper's metrics out: images and captions in every layout, prepared with a tiny
random VAE and text encoder (to a folder and to a real S3 endpoint), a sweep trained from the
shards to validation loss, FID and bits/dim, and the FID law in its status."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from isoflop_trainer.data.datasets import Shards, open_dataset
from isoflop_trainer.data.prepare import Settings, prepare
from isoflop_trainer.data.sources import open_source
from isoflop_trainer.data.store import read_index
from tests.trainer import realdata
from tests.trainer.helpers import env

IMAGE = 16  # pixels; the VAE halves it: latents 4x8x8
TEXT = 8  # tokens


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {
        "vae": realdata.write_vae(root / "vae"),
        "text": realdata.write_text_encoder(root / "text"),
        "inception": realdata.write_inception(root / "inception.pth"),
    }


def settings(models: dict[str, Path], **kw: object) -> Settings:
    base: dict[str, object] = dict(
        vae=str(models["vae"]),
        text_encoder=str(models["text"]),
        image_size=IMAGE,
        max_length=TEXT,
        shard_size=20,
        validation_fraction=0.25,
    )
    return Settings(**{**base, **kw})  # type: ignore[arg-type]


LAYOUTS = {
    "imagefolder": lambda p: realdata.write_imagefolder(p),
    "sidecar": lambda p: realdata.write_imagefolder(p, sidecar=True),
    "webdataset": lambda p: realdata.write_webdataset(p),
    "hf-disk": lambda p: realdata.write_hf_disk(p),
    "parquet": lambda p: realdata.write_parquet(p),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_caption_layout_prepares_to_the_same_kind_of_shards(
    layout: str, models: dict[str, Path], tmp_path: Path
) -> None:
    source = open_source(str(LAYOUTS[layout](tmp_path / "src")))
    index, summary = prepare(source, str(tmp_path / "out"), settings(models), progress=False)
    assert summary.records == 64
    assert not summary.skipped
    assert index["samples"] + summary.validation == 64  # nothing lost: a split, not a filter
    assert 8 <= summary.validation <= 28  # about a quarter, by a hash of each key
    assert index["latent_shape"] == [4, 8, 8]
    assert (index["text_length"], index["text_dim"]) == (TEXT, 32)
    assert index["vae"]["scaling_factor"] == 0.5
    assert index["vae"]["shift_factor"] == 0.1
    assert index["text_encoder"]["kind"] == "clip_text_model"
    train = open_dataset(str(tmp_path / "out"), (4, 8, 8), TEXT, 32)
    val = open_dataset(str(tmp_path / "out"), (4, 8, 8), TEXT, 32, split=1)
    assert isinstance(train, Shards)
    assert isinstance(val, Shards)
    assert (len(train), len(val)) == (index["samples"], summary.validation)
    batch = train.batch(list(range(len(train))))
    assert np.isfinite(batch.latents.numpy()).all()
    assert batch.mask.any(dim=1).all()  # every caption has tokens
    # the same captions give the same embeddings: rows of equal captions are equal
    z = np.load(tmp_path / "out" / "shard-00000.npz")
    assert z["keys"].shape[0] == z["latents"].shape[0]


def test_a_t5_encoder_gives_its_hidden_states(models: dict[str, Path], tmp_path: Path) -> None:
    t5 = realdata.write_text_encoder(tmp_path / "t5", hidden=24, kind="t5")
    source = open_source(str(realdata.write_imagefolder(tmp_path / "src", n=8)))
    index, _ = prepare(
        source, str(tmp_path / "out"), settings(models, text_encoder=str(t5)), progress=False
    )
    assert index["text_encoder"]["kind"] == "t5"
    assert (index["text_length"], index["text_dim"]) == (TEXT, 24)
    z = np.load(tmp_path / "out" / "shard-00000.npz")
    assert z["text"].shape[1:] == (TEXT, 24)
    assert z["mask"][:, :3].all()  # three words per caption
    assert not z["mask"][:, 3:].any()  # then padding


def test_class_folders_get_one_hot_labels(models: dict[str, Path], tmp_path: Path) -> None:
    source = open_source(str(realdata.write_classfolder(tmp_path / "src")))
    assert source.classes == ["blue", "green", "red"]
    index, summary = prepare(
        source, str(tmp_path / "out"), settings(models, text_encoder=None), progress=False
    )
    assert index["conditioning"] == "class"
    assert (index["text_length"], index["text_dim"]) == (1, 3)
    z = np.load(tmp_path / "out" / "shard-00000.npz")
    for key, onehot in zip(z["keys"], z["text"][:, 0], strict=True):
        assert onehot.tolist() == [float(c == str(key).split("/")[0]) for c in source.classes]
    assert summary.train + summary.validation == 64


def test_bad_records_are_counted_and_a_rerun_resumes_by_shard(
    models: dict[str, Path], tmp_path: Path
) -> None:
    src = realdata.write_imagefolder(tmp_path / "src")
    (src / "img003.png").write_bytes(b"not an image")
    rows = (src / "metadata.jsonl").read_text().splitlines()
    rows[5] = json.dumps({"file_name": "img005.png", "text": "  "})
    rows[7] = json.dumps({"file_name": "gone.png", "text": "red circle"})
    (src / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    index, summary = prepare(open_source(str(src)), str(out), settings(models), progress=False)
    assert dict(summary.skipped) == {
        "unreadable image": 1,
        "empty caption": 1,
        "missing image file": 1,
    }
    assert index["samples"] + summary.validation == 61
    assert index["skipped"] == dict(summary.skipped)
    said = summary.text(str(out))
    assert "skipped 3 records" in said
    assert "1 unreadable image (e.g. img003.png)" in said
    first = (out / "shard-00001.npz").read_bytes()
    # a crash lost shard 1: the rerun writes it alone, byte for byte as before
    (out / "shard-00001.npz").unlink()
    (out / "parts" / "shard-00001.json").unlink()
    again, resumed = prepare(open_source(str(src)), str(out), settings(models), progress=False)
    assert (resumed.shards_done, resumed.shards_skipped) == (1, 3)
    assert (out / "shard-00001.npz").read_bytes() == first
    assert again == index
    with pytest.raises(ValueError, match=r"other settings \(image_size differ\)"):
        prepare(open_source(str(src)), str(out), settings(models, image_size=32), progress=False)


def sweep_manifest(path: Path, data: str, inception: Path, text_dim: int = 32) -> Path:
    manifest = {
        "apiVersion": "isoflop.dev/v1alpha1",
        "kind": "ScalingSweep",
        "metadata": {"name": "realdata"},
        "spec": {
            "model": {"family": "in-context", "depths": [1, 2, 3], "widthPerDepth": 16,
                      "headDim": 8, "patchSize": 2},
            "data": {"source": data, "latentShape": [4, 8, 8], "textLength": TEXT,
                     "textDim": text_dim},
            "budgets": [2e9, 6e9],
            "training": {"globalBatchSize": 8, "learningRate": 2e-3, "precision": "fp32",
                         "compile": False, "minSteps": 10, "evalSamples": 64, "emaDecay": 0.9},
            "evaluation": {
                "fid": {"samples": 16, "steps": 4, "features": "inception",
                        "weights": str(inception)},
                "likelihood": {"samples": 4, "steps": 4},
            },
            "parallelism": 2,
            "fit": {"bootstrap": 100, "method": "parabola"},
        },
    }  # fmt: skip
    path.write_text(yaml.safe_dump(manifest))
    return path


def isoflop(*args: str) -> list[str]:
    return [sys.executable, "-m", "isoflop.cli", *args]


def test_a_sweep_trains_from_shards_on_s3_to_loss_fid_and_bits_per_dim(
    models: dict[str, Path], tmp_path: Path, bucket: str
) -> None:
    src = realdata.write_imagefolder(tmp_path / "src")
    data = f"s3://{bucket}/captions"
    prepared = subprocess.run(
        [sys.executable, "-m", "isoflop_trainer.cli", "prepare", str(src), "--output", data,
         "--vae", str(models["vae"]), "--text-encoder", str(models["text"]),
         "--image-size", str(IMAGE), "--max-length", str(TEXT), "--shard-size", "20",
         "--validation-fraction", "0.25", "--workers", "2", "--quiet"],
        capture_output=True, text=True, env=env(), timeout=300, check=False,
    )  # fmt: skip
    assert prepared.returncode == 0, prepared.stderr[-2000:]
    assert "skipped none" in prepared.stdout
    assert read_index(data).validation_uri == f"{data}/validation"

    # the wrong text width is refused before any trial starts, in one sentence
    wrong = sweep_manifest(tmp_path / "wrong.yaml", data, models["inception"], text_dim=64)
    out = subprocess.run(isoflop("validate", str(wrong)), capture_output=True, text=True,
                         env=env(), timeout=120, check=False)  # fmt: skip
    assert out.returncode == 2
    assert out.stderr.startswith(f"isoflop: error: data.source {data} holds latents 4x8x8, text")
    assert "check data.textDim" in out.stderr
    assert out.stderr.count("\n") == 1

    manifest = sweep_manifest(tmp_path / "sweep.yaml", data, models["inception"])
    out = subprocess.run(isoflop("validate", str(manifest)), capture_output=True, text=True,
                         env=env(), timeout=120, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "epochs per trial" in out.stdout
    assert "6 of 6 trials see samples more than once" in out.stdout  # ~40 samples
    run_dir = tmp_path / "run"
    out = subprocess.run(
        isoflop("run", str(manifest), "--run-dir", str(run_dir), "--plain"),
        capture_output=True, text=True, env=env(), timeout=900, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    status = json.loads((run_dir / "status.json").read_text())
    assert status["phase"] == "Succeeded"
    results = {}
    for trial in (run_dir / "trials").iterdir():
        result = json.loads((trial / "result.json").read_text())
        for key in ("eval_loss", "eval_fid", "eval_bpd"):
            assert np.isfinite(result[key]), (trial.name, key)
        assert result["eval_fid"] > 0
        results[trial.name] = result
    laws = status["fit"]["laws"]
    assert np.isfinite(laws["metrics"]["fid"]["exponent"])  # the FID law is in the status
    negative = any(r["eval_bpd"] <= 0 for r in results.values())
    # bits/dim of continuous latents can be negative: then no power law, and the fit says so
    assert ("bpd" in laws["metrics"]) is not negative
    assert any(w.startswith("bpd has values <= 0") for w in status["fit"]["warnings"]) is negative
    assert "fid" in (run_dir / "trials.csv").read_text().splitlines()[0]
    assert "fid*(C)" in (run_dir / "report.md").read_text()
    with Image.open(run_dir / "plots" / "laws.png") as plot:  # a 5-inch panel per law, 120 dpi
        assert plot.width == 600 * (3 + len(laws["metrics"]))

    # reproducible: one trial trained again from its config gives the same numbers
    name = sorted(results)[0]
    config = json.loads((run_dir / "trials" / name / "config.json").read_text())
    config.update(results=str(tmp_path / "again.json"), checkpoint=None, progress=None)
    again = subprocess.run(
        [sys.executable, "-m", "isoflop_trainer.cli", "train", "--config-json", json.dumps(config)],
        capture_output=True, text=True, env=env(), timeout=300, check=False,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-2000:]
    repeated = json.loads((tmp_path / "again.json").read_text())
    for key in ("eval_loss", "eval_fid", "eval_bpd"):
        assert repeated[key] == results[name][key]
