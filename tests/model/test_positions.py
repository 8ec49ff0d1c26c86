"""Position encodings: the relative shift, translation invariance and length extrapolation."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gopher_jax.model import positions as pos
from gopher_jax.model.attention import add_head_bias
from tests.model.helpers import forward, init_params, random_tokens, small_config


def test_relative_shift_equals_naive_gather():
    t = 7
    x = jax.random.normal(jax.random.key(0), (2, 3, t, t))  # [..., query, distance T-1-c]
    shifted = np.asarray(pos.relative_shift(x))
    for i in range(t):
        for j in range(i + 1):
            np.testing.assert_allclose(shifted[..., i, j], x[..., i, t - 1 - (i - j)])


@pytest.mark.parametrize("position", ["relative", "rope", "alibi"])
def test_scores_depend_only_on_relative_offsets(position):
    """A document shifted right by k positions (behind another one) gets identical logits."""
    cfg = small_config(position=position)
    params = init_params(cfg)
    doc = np.asarray(random_tokens((1, 10)))
    alone = forward(cfg, params, doc)
    for k in (1, 5, 13):
        filler = np.asarray(random_tokens((1, k), seed=k))
        packed = np.concatenate([filler, doc], axis=1)
        segments = np.array([[1] * k + [2] * 10])
        # Positions as one long row (no per-document reset): only relative encodings can pass.
        out = forward(cfg, params, packed, segment_ids=segments)
        np.testing.assert_allclose(out[:, k:], alone, atol=2e-5)


def test_learned_absolute_positions_are_not_translation_invariant():
    cfg = small_config(position="learned")
    params = init_params(cfg)
    doc = np.asarray(random_tokens((1, 10)))
    packed = np.concatenate([np.asarray(random_tokens((1, 5), seed=9)), doc], axis=1)
    out = forward(cfg, params, packed, segment_ids=np.array([[1] * 5 + [2] * 10]))
    assert not np.allclose(out[:, 5:], forward(cfg, params, doc), atol=1e-3)


@pytest.mark.parametrize("position", ["relative", "rope", "alibi"])
def test_evaluates_at_twice_the_trained_length(position):
    cfg = small_config(position=position, max_len=16)
    params = init_params(cfg, length=16)
    out = forward(cfg, params, random_tokens((2, 32)))
    assert out.shape == (2, 32, cfg.vocab_size)
    assert bool(jnp.all(jnp.isfinite(out)))


def test_rope_dot_products_depend_only_on_offset():
    q = jax.random.normal(jax.random.key(1), (1, 1, 1, 16))
    k = jax.random.normal(jax.random.key(2), (1, 1, 1, 16))

    def score(i, j):
        qi = pos.apply_rope(q, jnp.array([[i]]), 10_000.0)
        kj = pos.apply_rope(k, jnp.array([[j]]), 10_000.0)
        return float(jnp.sum(qi * kj))

    assert score(3, 1) == pytest.approx(score(10, 8), rel=1e-5)
    assert score(3, 1) != pytest.approx(score(3, 2), rel=1e-3)


def test_alibi_slopes_match_the_paper():
    np.testing.assert_allclose(pos.alibi_slopes(8), [2.0 ** -(i + 1) for i in range(8)])
    assert len(pos.alibi_slopes(12)) == 12


def test_head_bias_gradient_is_the_exact_fp32_sum_of_the_bf16_cotangents():
    q = jax.random.normal(jax.random.PRNGKey(0), (3, 5, 4, 8), jnp.bfloat16)
    bias = jax.random.normal(jax.random.PRNGKey(1), (4, 8))
    gq, gb = jax.grad(lambda q, b: jnp.sum(jnp.sin(add_head_bias(q, b).astype(jnp.float32))), (0, 1))(q, bias)
    cot = np.asarray(jnp.cos((q + bias.astype(q.dtype)).astype(jnp.float32)).astype(jnp.bfloat16), np.float64)
    assert gb.dtype == jnp.float32 and gq.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(gb), cot.sum((0, 1)), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(gq, np.float64), cot)
