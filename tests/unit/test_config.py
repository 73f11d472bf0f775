"""Exact parameter and FLOP accounting, checked by hand on small configurations."""

from __future__ import annotations

import pytest

from isoflop_trainer.config import FREQUENCY_DIM, DiTConfig


def tiny(**kw: object) -> DiTConfig:
    # d=8, 1 head, MLP 16, patch 1 on a 1x2x2 latent (T=4 image tokens), 2 text tokens of dim 3.
    base: dict[str, object] = dict(
        family="in-context",
        depth=1,
        width=8,
        heads=1,
        mlp_ratio=2.0,
        patch_size=1,
        latent_channels=1,
        latent_height=2,
        latent_width=2,
        text_length=2,
        text_dim=3,
    )
    base.update(kw)
    return DiTConfig(**base)  # type: ignore[arg-type]


def test_frequency_dim_is_256() -> None:
    assert FREQUENCY_DIM == 256  # the hand counts below assume it


def test_in_context_params_by_hand() -> None:
    p = tiny().params()
    assert p.by_module == {
        "x_embedder": 1 * 8 + 8,  # Conv2d(1, 8, 1): weight + bias
        "t_embedder": 256 * 8 + 8 + 8 * 8 + 8,
        "y_embedder": 3 * 8 + 8,
        "blocks": (4 * 64 + 4 * 8) + (2 * 8 * 16 + 16 + 8) + (6 * 64 + 6 * 8),  # attn, mlp, adaLN
        "final_layer": (2 * 64 + 2 * 8) + (8 * 1 + 1),  # adaLN(d, 2d) + Linear(d, p*p*C)
    }
    assert p.total == 3329
    assert p.non_embedding == 1000


def test_in_context_flops_by_hand() -> None:
    # S = 2 text + 4 image tokens. Forward FLOPs per matmul, backward 2x, or 1x for data inputs.
    f = tiny().flops_per_sample()
    data_inputs = 2 * 4 * 1 * 8 + 2 * 256 * 8 + 2 * 2 * 3 * 8  # patch, timestep fc1, text proj
    graded = (
        2 * 8 * 8  # timestep fc2
        + 2 * 4 * 8 * 1  # final linear, image tokens only
        + 2 * 8 * 16  # final adaLN, once per sample
        + 2 * 6 * 8 * 24
        + 2 * 6 * 8 * 8  # qkv + out on S=6 tokens
        + 2 * 2 * 6 * 8 * 16  # MLP
        + 2 * 8 * 48  # block adaLN, once per sample
    )
    attention = 4 * 6 * 6 * 8
    assert f.forward == data_inputs + graded + attention == 12768
    assert f.backward == data_inputs + 2 * graded + 2 * attention == 21280
    assert f.attention == 3 * attention
    assert f.total == 34048


def test_cross_attention_counts_by_hand() -> None:
    c = tiny(family="cross-attention")
    assert c.sequence_length == 4  # text is not in the self-attention sequence
    p = c.params()
    assert p.non_embedding == 2 * (4 * 64 + 4 * 8) + (2 * 8 * 16 + 16 + 8) + (6 * 64 + 6 * 8)
    assert p.total == 3617
    f = c.flops_per_sample()
    data_inputs = 2 * 4 * 8 + 2 * 256 * 8 + 2 * 2 * 3 * 8
    graded = (
        2 * 64
        + 2 * 4 * 8
        + 2 * 8 * 16
        + 2 * 4 * 8 * 32  # self qkv + out on S=4
        + 2 * 2 * 4 * 8 * 16  # MLP
        + 2 * 8 * 48  # adaLN
        + 2 * 4 * 8 * 16  # cross q + out on image tokens
        + 2 * 2 * 8 * 16  # cross k, v on the 2 text tokens only
    )
    attention = 4 * 4 * 4 * 8 + 4 * 4 * 2 * 8  # self (4x4) + cross (4x2)
    assert f.forward == data_inputs + graded + attention == 11872
    assert f.total == 31360


def test_timestep_token_variant() -> None:
    c = tiny(timestep_conditioning="in-context")
    assert c.sequence_length == 1 + 2 + 4
    p = c.params()
    # no adaLN: two affine LayerNorms per block and one in the final layer
    assert p.by_module["blocks"] == (4 * 64 + 4 * 8) + (2 * 8 * 16 + 16 + 8) + 2 * 2 * 8
    assert p.by_module["final_layer"] == 2 * 8 + 8 * 1 + 1
    assert p.total == 2801
    attention = 4 * 7 * 7 * 8
    assert c.flops_per_sample().attention == 3 * attention


def test_qk_norm_adds_two_rmsnorm_weights_per_attention() -> None:
    for family, attentions in (("in-context", 1), ("cross-attention", 2)):
        base = tiny(family=family, width=16, heads=2)
        qk = tiny(family=family, width=16, heads=2, qk_norm=True)
        assert qk.params().total - base.params().total == attentions * 2 * 8
        assert qk.flops_per_sample() == base.flops_per_sample()


def test_six_nd_convention() -> None:
    c = tiny()
    assert c.tokens_per_sample == 6
    assert c.flops_per_sample_6nd() == 6 * 3329 * 6
    assert c.training_flops_per_sample("6ND") == 6 * 3329 * 6
    assert c.training_flops_per_sample("exact") == 34048


def test_attention_share_matches_t_over_6d_rule() -> None:
    # DESIGN.md: attention is T/(6d) of the block matmul FLOPs. Check it on a paper-sized block.
    c = DiTConfig(family="in-context", depth=12, width=768, heads=12)
    f = c.flops_per_sample()
    S, d = c.sequence_length, c.width
    block_matmul = c.depth * 2 * S * (4 * d * d + 2 * d * c.mlp_hidden) * 3
    assert f.attention / block_matmul == pytest.approx(S / (6 * d), rel=1e-12)


def test_params_grow_with_depth_and_width() -> None:
    counts = [
        DiTConfig(family="in-context", depth=k, width=64 * k, heads=k).params().total
        for k in range(1, 8)
    ]
    assert counts == sorted(counts)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"width": 10, "heads": 3}, "not divisible by 3 heads"),
        ({"patch_size": 3}, "not divisible by patch 3"),
        ({"depth": 0}, "depth must be at least 1"),
        ({"family": "unet"}, "family must be one of"),
        ({"mlp_ratio": 0.01}, "empty MLP"),
    ],
)
def test_invalid_configs(kw: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tiny(**kw)
