"""RMSNorm's written-out backward and the float32 GELU == autodiff of their plain formulas."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gopher_jax.model.mlp import gelu
from gopher_jax.model.norms import rms_norm


def _plain_rms_norm(x, scale, eps):
    x32 = x.astype(jnp.float32)
    return x32 * jnp.reciprocal(jnp.sqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + eps)) * scale


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) / np.linalg.norm(b)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_rms_norm_forward_and_both_gradients_match_autodiff(dtype):
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    x = (3 * jax.random.normal(keys[0], (2, 5, 37))).astype(dtype)  # d = 37: no vector-width multiple
    scale = jax.random.normal(keys[1], (37,))
    dy = jax.random.normal(keys[2], (2, 5, 37)).astype(dtype)
    y, vjp = jax.vjp(lambda x, s: rms_norm(x, s, 1e-6, jnp.dtype(dtype)), x, scale)
    dx, ds = vjp(dy)
    # The reference differentiates the float32 formula at the same (rounded) inputs.
    ref_y, ref_vjp = jax.vjp(lambda x, s: _plain_rms_norm(x, s, 1e-6), x.astype(jnp.float32), scale)
    ref_dx, ref_ds = ref_vjp(dy.astype(jnp.float32))
    assert (y.dtype, dx.dtype, ds.dtype) == (jnp.dtype(dtype), jnp.dtype(dtype), jnp.float32)
    tol = 1e-6 if dtype == "float32" else 1e-2  # bf16: the outputs' own rounding
    for name, ours, ref in (("y", y, ref_y), ("dx", dx, ref_dx), ("dscale", ds, ref_ds)):
        assert _rel(ours, ref) < (1e-6 if name == "dscale" else tol), (name, _rel(ours, ref))


def test_gelu_is_float32_tanh_gelu_in_the_input_dtype():
    x = jnp.linspace(-6.0, 6.0, 997)
    np.testing.assert_array_equal(gelu(x), jax.nn.gelu(x))
    np.testing.assert_allclose(jax.grad(lambda v: gelu(v).sum())(x), jax.grad(lambda v: jax.nn.gelu(v).sum())(x),
                               rtol=1e-5, atol=5e-6)  # atol: where the derivative crosses zero
    xb = x.astype(jnp.bfloat16)  # computed in float32, rounded once (not per intermediate)
    np.testing.assert_array_equal(gelu(xb), jax.nn.gelu(xb.astype(jnp.float32)).astype(jnp.bfloat16))
    g = jax.grad(lambda v: gelu(v).astype(jnp.float32).sum())(xb)
    ref = jax.grad(lambda v: jax.nn.gelu(v).sum())(xb.astype(jnp.float32)).astype(jnp.bfloat16)
    assert g.dtype == jnp.bfloat16 and _rel(g, ref) < 1e-2
