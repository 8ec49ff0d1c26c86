"""GQA/MQA, scan vs unrolled, remat and precision: the same model through different code paths."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gopher_jax.model.decoder import unstack_layers
from tests.model.helpers import forward, init_params, random_tokens, small_config


def test_gqa_with_all_heads_is_mha():
    mha = small_config()
    gqa = small_config(num_kv_heads=mha.num_heads)
    params = init_params(mha)
    tokens = random_tokens((2, 12))
    np.testing.assert_array_equal(forward(mha, params, tokens), forward(gqa, params, tokens))


@pytest.mark.parametrize("kv_heads", [1, 2])
def test_grouped_query_equals_mha_with_repeated_kv_heads(kv_heads):
    """GQA shares each key/value head across a group of query heads; MHA with copies is the same."""
    gqa = small_config(num_kv_heads=kv_heads, position="rope")
    mha = small_config(position="rope")
    params = init_params(gqa)
    group = gqa.num_heads // kv_heads
    mha_params = jax.tree.map(lambda a: a, params)
    for name in ("key", "value"):
        kernel = params["layers"]["attention"][name]["kernel"]  # [L, d, K, D]
        mha_params["layers"]["attention"][name] = {"kernel": jnp.repeat(kernel, group, axis=2)}
    tokens = random_tokens((2, 12))
    np.testing.assert_allclose(forward(gqa, params, tokens), forward(mha, mha_params, tokens), atol=1e-5)


@pytest.mark.parametrize("position", ["relative", "learned"])
@pytest.mark.parametrize("mlp", ["gelu", "swiglu"])
def test_scan_equals_unrolled(position, mlp):
    scanned = small_config(position=position, mlp=mlp, num_layers=3)
    unrolled = scanned.replace(scan_layers=False)
    params = init_params(scanned)
    tokens = random_tokens((2, 12))
    np.testing.assert_allclose(forward(scanned, params, tokens),
                               forward(unrolled, unstack_layers(params, 3), tokens), atol=1e-5)


@pytest.mark.parametrize("unroll", [2, 3])  # 2 leaves a remainder of 1 layer; 3 unrolls fully
def test_scan_unroll_gives_the_same_gradients(unroll):
    rolled = small_config(num_layers=3)
    params = init_params(rolled)  # one stacked layout for every unroll factor
    tokens = random_tokens((2, 12))

    def grads(cfg):
        return jax.jit(jax.grad(lambda p: jnp.mean(forward(cfg, p, tokens) ** 2)))(params)

    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 grads(rolled), grads(rolled.replace(scan_unroll=unroll)))


def test_remat_policies_give_the_same_gradients():
    base = small_config(num_layers=2, d_model=32, num_heads=2)
    params = init_params(base)
    tokens = random_tokens((2, 8))

    def grads(cfg):
        return jax.jit(jax.grad(lambda p: jnp.mean(forward(cfg, p, tokens) ** 2)))(params)

    ref = grads(base)
    for policy in ("full", "dots", "dots_no_batch", "save_attn_mlp_out"):
        got = grads(base.replace(remat_policy=policy))
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), ref, got)


def test_bf16_compute_agrees_with_fp32():
    fp32 = small_config()
    params = init_params(fp32)
    tokens = random_tokens((2, 16))
    ref = forward(fp32, params, tokens)
    for cfg in (fp32.replace(dtype="bfloat16"), fp32.replace(dtype="bfloat16", param_dtype="bfloat16")):
        p = params if cfg.param_dtype == "float32" else jax.tree.map(lambda a: a.astype(jnp.bfloat16), params)
        out = forward(cfg, p, tokens)
        assert out.dtype == jnp.float32
        # bf16 keeps 8 mantissa bits: ~1% relative error on logits of order one.
        np.testing.assert_allclose(out, ref, atol=0.05 * float(jnp.max(jnp.abs(ref))))
        assert float(jnp.mean(jnp.abs(out - ref))) < 0.01 * float(jnp.mean(jnp.abs(ref))) + 1e-3


def test_params_stored_in_param_dtype():
    cfg = small_config(param_dtype="bfloat16")
    params = init_params(cfg)
    assert {a.dtype for a in jax.tree.leaves(params)} == {jnp.dtype(jnp.bfloat16)}
