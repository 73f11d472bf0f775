"""Rectified flow: the likelihood integrator against a closed form, the samplers of x and t."""

from __future__ import annotations

import math

import pytest
import torch

from isoflop_trainer.models.flow import (
    bits_per_dim,
    drop_text,
    flow_loss,
    interpolate,
    keep_captions,
    log_likelihood,
    sample,
    sample_timesteps,
)

S = 0.5  # data ~ N(0, S^2 I): the optimal rectified-flow velocity is known in closed form


def gaussian_velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    tt = t.view(-1, *([1] * (x.dim() - 1)))
    return x * (tt - (1 - tt) * S**2) / ((1 - tt) ** 2 * S**2 + tt**2)


@pytest.mark.parametrize("exact", [True, False])
def test_ode_likelihood_matches_the_gaussian_density(exact: bool) -> None:
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(64, 1, 2, 3, generator=g) * S
    dims = 6
    true = (
        -0.5 * (x0 / S).pow(2).flatten(1).sum(1)
        - dims * math.log(S)
        - dims / 2 * math.log(2 * math.pi)
    )
    got = log_likelihood(gaussian_velocity, x0, steps=64, generator=g, exact_trace=exact)
    assert torch.allclose(got, true, atol=5e-3)
    assert bits_per_dim(got, dims).mean() == pytest.approx(
        float(-true.mean() / (dims * math.log(2))), abs=1e-3
    )


def test_hutchinson_estimates_a_non_diagonal_divergence() -> None:
    w = torch.tensor([[0.3, 0.8], [-0.5, 0.1]])

    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x.view(-1, 2) @ w.T).view_as(x)

    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(256, 2, 1, 1, generator=g)
    exact = log_likelihood(velocity, x0, steps=16, exact_trace=True)
    estimate = log_likelihood(velocity, x0, steps=16, probes=64, generator=g)
    assert (estimate - exact).abs().mean() < 0.05  # unbiased, with 64 probes small scatter


def test_flow_loss_is_zero_for_the_true_velocity() -> None:
    x0, noise, t = torch.randn(8, 3, 4, 4), torch.randn(8, 3, 4, 4), torch.rand(8)

    def oracle(x: torch.Tensor, tt: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return noise - x0

    assert float(flow_loss(oracle, x0, torch.zeros(8, 2, 2), t, noise)) == 0.0
    assert torch.equal(interpolate(x0, noise, torch.zeros(8)), x0)
    assert torch.equal(interpolate(x0, noise, torch.ones(8)), noise)


def test_euler_sampler_follows_the_flow_and_guidance_extrapolates() -> None:
    x0 = torch.full((2, 1, 1, 1), 3.0)
    noise = torch.zeros_like(x0)

    def straight(x: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return -text.view(-1, 1, 1, 1).expand_as(x) * 3.0  # v = eps - x0 with eps = 0, x0 = 3 text

    text = torch.ones(2, 1, 1)
    assert torch.allclose(sample(straight, noise, text, steps=10), x0)
    # guided: v = v_u + w (v_c - v_u), v_u = 0 for empty text
    assert torch.allclose(sample(straight, noise, text, steps=10, guidance=2.0), 2 * x0)


def test_timestep_samplers_and_caption_dropout() -> None:
    g = torch.Generator().manual_seed(0)
    u = sample_timesteps(20000, "uniform", g)
    ln = sample_timesteps(20000, "logit-normal", g)
    assert float(u.min()) >= 0
    assert float(u.max()) < 1
    assert abs(float(u.mean()) - 0.5) < 0.01
    assert abs(float(ln.mean()) - 0.5) < 0.01
    assert float(((ln - 0.5).abs() < 0.25).float().mean()) > float(
        ((u - 0.5).abs() < 0.25).float().mean()
    )
    with pytest.raises(ValueError, match="unknown timestep sampling"):
        sample_timesteps(3, "beta", g)  # type: ignore[arg-type]
    text = torch.ones(10000, 2, 3)
    dropped = drop_text(text, keep_captions(10000, 0.1, g))
    share = float((dropped.flatten(1).abs().sum(1) == 0).float().mean())
    assert abs(share - 0.1) < 0.015
