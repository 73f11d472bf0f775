"""Evaluation: fixed validation pairs, Frechet distance, FID's decoders and feature networks."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from isoflop_trainer.data.datasets import ProceduralShapes
from isoflop_trainer.evaluation.fid import (
    LatentsAsImages,
    RandomConvFeatures,
    frechet_distance,
    load_decoder,
    load_features,
    to_uint8,
)
from isoflop_trainer.evaluation.loss import fixed_pairs, validation_loss, validation_loss_and_error
from isoflop_trainer.models.dit import DiT
from isoflop_trainer.models.flow import flow_loss
from isoflop_trainer.train import train
from tests.trainer.helpers import tiny
from tests.trainer.realdata import write_clip, write_inception


def test_fixed_pairs_are_identical_for_every_trial_and_stratified() -> None:
    t1, n1 = fixed_pairs(16, 4, (3, 8, 8))
    t2, n2 = fixed_pairs(16, 4, (3, 8, 8))
    assert torch.equal(t1, t2)
    assert torch.equal(n1, n2)
    for k in range(4):  # pair k of every sample lies in the k-th quarter of [0, 1)
        assert bool(((t1[:, k] >= k / 4) & (t1[:, k] < (k + 1) / 4)).all())


def test_validation_loss_is_deterministic_and_tells_models_apart() -> None:
    cfg = tiny().model
    val = ProceduralShapes((3, 16, 16), 8, 16, split=1)
    model = DiT(cfg)
    first, second = validation_loss(model, val, 32), validation_loss(model, val, 32)
    assert first == second
    with torch.no_grad():
        model.final_layer.linear.weight.normal_(0, 0.1)
    assert validation_loss(model, val, 32) != first


def test_validation_loss_reports_its_standard_error_over_samples() -> None:
    cfg = tiny().model
    val = ProceduralShapes((3, 16, 16), 8, 16, split=1)
    model = DiT(cfg)
    mean, se = validation_loss_and_error(model, val, 64)
    assert mean == validation_loss(model, val, 64)
    # the same figure by hand: each sample's loss over its 4 pairs, then their spread
    ts, noises = fixed_pairs(64, 4, (3, 16, 16))
    b = val.batch(list(range(64)))
    with torch.no_grad():
        each = torch.stack(
            [
                flow_loss(model, b.latents, b.text, ts[:, k], noises[:, k], reduce=False)
                for k in range(4)
            ]
        ).mean(0)
    assert mean == pytest.approx(float(each.mean()), rel=1e-5)
    assert se == pytest.approx(float(each.std()) / 8, rel=1e-4)
    assert 0 < se < 0.2 * mean
    # four times the samples: about half the error
    assert validation_loss_and_error(model, val, 256)[1] == pytest.approx(se / 2, rel=0.35)


def test_frechet_distance_of_gaussians_matches_the_closed_form() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(20000, 3))
    b = rng.normal(size=(20000, 3)) * 2.0 + np.array([1.0, 0.0, 0.0])
    # |mu|^2 + tr(I + 4I - 2 * 2I) = 1 + 3
    assert frechet_distance(a, b) == pytest.approx(4.0, rel=0.05)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_feature_networks_are_fixed_or_loaded_and_never_downloaded(tmp_path: Path) -> None:
    x = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    one, two = load_features("random-conv"), load_features("random-conv")
    assert torch.equal(one(x), two(x))
    assert not torch.equal(one(x), load_features("random-conv:7")(x))
    path = tmp_path / "features.pt2"
    program = torch.export.export(RandomConvFeatures(seed=3), (x,))
    torch.export.save(program, str(path))
    assert torch.allclose(load_features(str(path))(x), RandomConvFeatures(seed=3)(x))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_features(str(tmp_path / "missing.pt"))
    # Inception-v3 from a local file: 2048 pool features of uint8 images of any size
    inception = load_features("inception", str(write_inception(tmp_path / "inception.pth")))
    features = inception(x)
    assert features.shape == (4, 2048)
    assert torch.isfinite(features).all()
    assert torch.equal(features, inception(x))
    # no weights given and none in the hub cache: one sentence, no download
    hub = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "empty-hub"))
    try:
        with pytest.raises(FileNotFoundError, match="nothing is downloaded while training"):
            load_features("inception")
        with pytest.raises(FileNotFoundError, match="clip-vit-b-32 needs its weights"):
            load_features("clip-vit-b-32")
    finally:
        torch.hub.set_dir(hub)
    # a CLIP image tower from an OpenAI-format TorchScript file, as the paper's CLIP-FID
    clip = load_features("clip-vit-b-32", str(write_clip(tmp_path / "clip.pt")))
    assert clip(x).shape == (4, 16)
    assert torch.equal(clip(x), clip(x))
    with pytest.raises(ValueError, match="unknown FID feature network 'clip-nope'"):
        load_features("clip-nope", "/x")


def test_procedural_latents_decode_to_the_images_they_paint() -> None:
    data = ProceduralShapes((4, 16, 16), 8, 16)
    decoder = load_decoder(None, data)
    assert isinstance(decoder, LatentsAsImages)
    images = to_uint8(decoder(data.batch([0, 1]).latents))
    assert images.shape == (2, 3, 16, 16)
    assert images.dtype == torch.uint8
    # the background is -0.6 in every channel: grey 51
    assert int(images[0, :, 0, 0].float().mean()) == 51


def test_a_trial_reports_likelihood_and_fid(tmp_path: Path) -> None:
    weights = str(write_inception(tmp_path / "inception.pth"))
    cfg = tiny(
        tmp_path,
        steps=20,
        likelihood_samples=4,
        fid_samples=16,
        fid_steps=4,
        fid_weights=weights,
        ema_decay=0.9,
    )
    result, code = train(cfg)
    assert code == 0, result.get("error")
    assert math.isfinite(result["eval_bpd"])
    assert result["eval_fid"] > 0
    again, _ = train(cfg)  # the same trial again: the same numbers
    for key in ("eval_loss", "eval_bpd", "eval_fid"):
        assert again[key] == result[key]


def test_loader_workers_do_not_change_the_samples(tmp_path: Path) -> None:
    inline, _ = train(tiny(steps=6, micro_batch_size=4))
    workers, code = train(tiny(steps=6, micro_batch_size=4, num_workers=2))
    assert code == 0
    assert workers["losses"] == inline["losses"]
