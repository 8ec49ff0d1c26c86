"""The fused CPU attention kernel and the XLA attention give the same model, forward and backward."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gopher_jax.kernels import cpu_attention
from gopher_jax.model.decoder import Decoder
from tests.model.helpers import forward, init_params, random_tokens, small_config


def test_kernel_builds_here():
    """CI has g++: the kernel must build, or every CPU benchmark silently falls back to XLA."""
    assert cpu_attention.available(), cpu_attention.unavailable_reason()


@pytest.mark.parametrize("position,kv_heads", [("relative", 0), ("relative", 2), ("rope", 1), ("alibi", 0)])
def test_cpu_fused_equals_xla(position, kv_heads):
    xla = small_config(position=position, num_kv_heads=kv_heads, attention_impl="xla")
    fused = xla.replace(attention_impl="cpu_fused")
    params = init_params(xla)
    tokens = random_tokens((2, 19))
    segments = jnp.asarray([[1] * 7 + [2] * 12, [1] * 19], jnp.int32)  # a packed row and a plain one
    positions = jnp.asarray([list(range(7)) + list(range(12)), list(range(19))], jnp.int32)
    np.testing.assert_allclose(forward(fused, params, tokens, segments, positions),
                               forward(xla, params, tokens, segments, positions), atol=2e-5, rtol=1e-5)

    def loss(cfg, p):
        logits = Decoder(cfg).apply({"params": p}, tokens, segments, positions)
        return jnp.mean(jax.nn.log_softmax(logits)[..., 0])

    g_fused = jax.jit(jax.grad(lambda p: loss(fused, p)))(params)
    g_xla = jax.jit(jax.grad(lambda p: loss(xla, p)))(params)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(g_fused), jax.tree.leaves(g_xla)):
        np.testing.assert_allclose(a, b, atol=2e-6, rtol=2e-4, err_msg=jax.tree_util.keystr(path))


def test_auto_uses_xla_on_a_multi_device_mesh():
    """On a sharded mesh XLA would replicate the custom call, so 'auto' keeps the XLA attention."""
    from gopher_jax.model.attention import _use_cpu_kernel

    cfg = small_config()
    assert _use_cpu_kernel(cfg)  # no mesh: one device
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    with jax.set_mesh(mesh):
        assert not _use_cpu_kernel(cfg)
        assert _use_cpu_kernel(cfg.replace(attention_impl="cpu_fused"))
    assert not _use_cpu_kernel(cfg.replace(attention_impl="xla"))
