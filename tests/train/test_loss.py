"""The hand-written cross-entropy gradient against autodiff of the plain formula."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gopher_jax.ops import cross_entropy


def reference(logits, targets, weights, z_loss):
    log_z = jax.nn.logsumexp(logits, axis=-1)
    target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    z_term = z_loss * jnp.square(log_z)
    return jnp.sum((log_z - target_logit + z_term) * weights), jnp.sum(z_term * weights)


@pytest.mark.parametrize("z_loss", [0.0, 1e-2])
@pytest.mark.parametrize("one_hot_pick", [False, True])
def test_value_and_gradient_match_autodiff(z_loss, one_hot_pick):
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.standard_normal((2, 7, 53)) * 4, jnp.float32)
    targets = jnp.asarray(rng.integers(0, 53, (2, 7)), jnp.int32)
    weights = jnp.asarray(rng.random((2, 7)) * (rng.random((2, 7)) > 0.3), jnp.float32)

    # Both outputs carry a cotangent, as in the train step (loss and the logged z-sum).
    def combine(fn):
        return lambda l: (lambda out: out[0] + 0.37 * out[1])(fn(l))

    ours = combine(lambda l: cross_entropy(l, targets, weights, z_loss, one_hot_pick))
    ref = combine(lambda l: reference(l, targets, weights, z_loss))
    np.testing.assert_allclose(ours(logits), ref(logits), rtol=1e-6)
    np.testing.assert_allclose(jax.jit(jax.grad(ours))(logits), jax.grad(ref)(logits), atol=2e-7, rtol=1e-5)
    assert float(jnp.abs(jax.grad(ours)(logits)).sum()) > 0.1  # the comparison is not of zeros


def test_bfloat16_logits_give_float32_loss_and_bfloat16_gradient():
    logits = jnp.ones((3, 11), jnp.bfloat16)
    targets = jnp.zeros((3,), jnp.int32)
    loss, _ = cross_entropy(logits, targets, jnp.ones((3,)))
    assert loss.dtype == jnp.float32
    np.testing.assert_allclose(loss, 3 * np.log(11.0), rtol=1e-6)
    grad = jax.grad(lambda l: cross_entropy(l, targets, jnp.ones((3,)))[0])(logits)
    assert grad.dtype == jnp.bfloat16
