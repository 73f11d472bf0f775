"""Evaluation: fixed validation pairs, Frechet distance, pluggable feature extractors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from isoflop_trainer.data import ProceduralShapes
from isoflop_trainer.evaluate import (
    RandomConvFeatures,
    fixed_pairs,
    frechet_distance,
    load_extractor,
    validation_loss,
    validation_loss_and_error,
)
from isoflop_trainer.flow import flow_loss
from isoflop_trainer.model import DiT
from isoflop_trainer.train import train
from tests.trainer.helpers import tiny


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


def test_extractors_are_fixed_or_loaded_from_torchscript(tmp_path: Path) -> None:
    x = torch.randn(4, 3, 16, 16)
    one, two = load_extractor("random-conv", 3), load_extractor("random-conv", 3)
    assert torch.equal(one(x), two(x))
    assert not torch.equal(one(x), load_extractor("random-conv:7", 3)(x))
    path = tmp_path / "features.pt2"
    program = torch.export.export(RandomConvFeatures(3, seed=3), (x,))
    torch.export.save(program, str(path))
    loaded = load_extractor(str(path), 3)
    assert torch.allclose(loaded(x), RandomConvFeatures(3, seed=3)(x))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_extractor(str(tmp_path / "missing.pt"), 3)


def test_a_trial_reports_likelihood_and_fid(tmp_path: Path) -> None:
    result, code = train(tiny(tmp_path, steps=20, likelihood_samples=4, fid_samples=32))
    assert code == 0
    assert math.isfinite(result["eval_bpd"])
    assert result["eval_fid"] > 0


def test_loader_workers_do_not_change_the_samples(tmp_path: Path) -> None:
    inline, _ = train(tiny(steps=6, micro_batch_size=4))
    workers, code = train(tiny(steps=6, micro_batch_size=4, num_workers=2))
    assert code == 0
    assert workers["losses"] == inline["losses"]
