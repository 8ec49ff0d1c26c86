"""The fused head + cross-entropy (kernels/cpu_xent.cc, ops/head_cross_entropy.py) against the unfused
loss: the kernel's rows against the formula in float64, the op's value and gradients in x and the
head weight against `cross_entropy(x @ W)` (tied and untied heads, a padded vocabulary, z-loss with a
cotangent on both outputs), and the train step's loss with and without the fusion."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from gopher_jax.kernels import cpu_gemm, cpu_xent, matmul_impl, mkl_gemm
from gopher_jax.model.config import ModelConfig
from gopher_jax.model.decoder import Decoder
from gopher_jax.ops import cross_entropy, head_cross_entropy
from gopher_jax.train.step import fused_head_impl, make_loss_fn


def _reference_rows(logits, targets, weights, z):
    l64 = logits.astype(np.float64)
    lse = np.log(np.exp(l64 - l64.max(1, keepdims=True)).sum(1)) + l64.max(1)
    y = np.clip(targets, 0, logits.shape[1] - 1)
    loss = weights * (lse - l64[np.arange(len(y)), y] + z * lse**2)
    p = np.exp(l64 - lse[:, None])
    d = weights[:, None] * (p * (1 + 2 * z * lse)[:, None] - (np.arange(logits.shape[1])[None] == y[:, None]))
    return d, loss, lse


def test_kernel_is_available():
    assert cpu_xent.available(), cpu_xent.unavailable_reason()


@pytest.mark.parametrize("vocab", [1, 15, 17, 1000])
@pytest.mark.parametrize("z", [0.0, 0.1])
@pytest.mark.parametrize("grad_dtype", ["float32", "bfloat16"])
def test_rows_match_the_formula(vocab, z, grad_dtype):
    rng = np.random.default_rng(vocab)
    t = 19
    logits = (rng.standard_normal((t, vocab)) * 4).astype(np.float32)
    targets = rng.integers(0, vocab, t).astype(np.int32)
    targets[0], targets[1] = -3, vocab + 5  # clamped, as the unfused gather clamps
    weights = (rng.random(t) * (rng.random(t) > 0.3)).astype(np.float32)
    d, loss, lse = jax.jit(lambda *a: cpu_xent.xent(*a, z_loss=z, grad_dtype=grad_dtype))(logits, targets, weights)
    d_ref, loss_ref, lse_ref = _reference_rows(logits, targets, weights, z)
    assert d.dtype == jnp.dtype(grad_dtype)
    np.testing.assert_allclose(lse, lse_ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(loss, loss_ref, rtol=1e-5, atol=1e-6)
    # fp32: p - 1 at the target cancels (atol); bf16: one rounding to nearest per entry (8 mantissa bits)
    rtol = 1e-5 if grad_dtype == "float32" else 2.0**-8
    np.testing.assert_allclose(np.asarray(d, np.float32), d_ref, rtol=rtol, atol=2e-7)
    assert np.all(np.asarray(d, np.float32)[weights == 0] == 0)
    assert vocab == 1 or np.abs(d_ref).sum() > 0.1  # (one class: softmax 1 - onehot 1 = 0 everywhere)


def test_kernel_rejects_bad_inputs():
    with pytest.raises(ValueError, match="float32 logits"):
        cpu_xent.xent(jnp.ones((2, 3), jnp.bfloat16), jnp.zeros(2, jnp.int32), jnp.ones(2))
    with pytest.raises(ValueError, match="targets and weights of shape"):
        cpu_xent.xent(jnp.ones((2, 3)), jnp.zeros(3, jnp.int32), jnp.ones(2))


def _head_case(tied, vocab, pad, d, dtype, seed=0):
    rng = np.random.default_rng(seed)
    tokens = 37
    x = jnp.asarray(rng.standard_normal((tokens, d)), dtype)
    w_shape = (vocab + pad, d) if tied else (d, vocab + pad)
    w = jnp.asarray(rng.standard_normal(w_shape) * 0.3, jnp.float32)  # fp32 master weights
    targets = jnp.asarray(rng.integers(0, vocab, tokens), jnp.int32)
    weights = jnp.asarray(rng.random(tokens) * (rng.random(tokens) > 0.2), jnp.float32)
    return x, w, targets, weights


@pytest.mark.parametrize("impl", ["cpu_gemm", "mkl"])
@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("z", [0.0, 1e-2])
def test_head_op_matches_unfused_loss_in_fp32(tied, z, impl):
    """fp32: every impl is a GEMM then cpu_xent (the chunked MKL kernel runs for bf16 heads)."""
    vocab, pad, d = 203, 53, 24  # ragged vocab, padded rows that must get zero gradient
    x, w, targets, weights = _head_case(tied, vocab, pad, d, jnp.float32)

    def unfused(x, w):
        logits = jnp.dot(x, (w[:vocab].T if tied else w[:, :vocab]), precision="highest")
        out = cross_entropy(logits, targets, weights, z)
        return out[0] + 0.37 * out[1]  # a cotangent on the z-sum too: the g_z terms of the backward

    def fused(x, w):
        out = head_cross_entropy.head_cross_entropy(x, w, targets, weights, vocab=vocab, transposed=tied,
                                                    impl=impl, z_loss=z)
        return out[0] + 0.37 * out[1]

    value, grads = jax.jit(jax.value_and_grad(fused, argnums=(0, 1)))(x, w)
    ref_value, ref_grads = jax.value_and_grad(unfused, argnums=(0, 1))(x, w)
    np.testing.assert_allclose(value, ref_value, rtol=1e-6)
    for g, r in zip(grads, ref_grads):
        assert g.dtype == r.dtype and g.shape == r.shape
        assert np.linalg.norm(g - r) / np.linalg.norm(r) < 1e-5
    pad_grad = grads[1][vocab:] if tied else grads[1][:, vocab:]
    assert np.all(np.asarray(pad_grad) == 0)


@pytest.mark.parametrize("impl", ["cpu_gemm", "mkl"])
def test_head_op_in_bf16_is_as_close_to_fp32_as_the_unfused_bf16_loss(impl):
    """impl="mkl" is the chunked kernel (mkl_gemm.head_xent) here."""
    vocab, d = 300, 32
    x32, w, targets, weights = _head_case(True, vocab, 0, d, jnp.float32, seed=1)
    x16 = x32.astype(jnp.bfloat16)

    def loss(x, w, fused):
        if fused:
            return head_cross_entropy.head_cross_entropy(x, w, targets, weights, vocab=vocab, transposed=True,
                                                         impl=impl)[0]
        logits = jnp.dot(x, w.astype(x.dtype).T, preferred_element_type=jnp.float32)
        return cross_entropy(logits, targets, weights)[0]

    truth = jax.grad(loss, argnums=(0, 1))(x16.astype(jnp.float32), w, False)
    for fused in (False, True):
        gx, gw = jax.jit(jax.grad(loss, argnums=(0, 1)), static_argnums=2)(x16, w, fused)
        assert gx.dtype == jnp.bfloat16 and gw.dtype == jnp.float32
        errors = [np.linalg.norm(np.asarray(g, np.float32) - t) / np.linalg.norm(t) for g, t in zip((gx, gw), truth)]
        assert max(errors) < 1e-2, (fused, errors)  # one bf16 rounding of the logit gradient (2^-9 each)


@pytest.mark.parametrize("trans_w", [True, False])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_mkl_chunked_head_loss_equals_logits_then_xent(trans_w, dtype):
    """mkl_gemm.head_xent computes the logits 128 rows at a time (300 rows: two whole chunks and a
    ragged one, split over the threads) and never whole; its rows equal cpu_xent on the whole fp32
    logits, up to fp32 summation order in the GEMM; d in bf16 is the same rounding."""
    rng = np.random.default_rng(4)
    t, d, vocab, z = 300, 40, 517, 1e-2
    x = jnp.asarray(rng.standard_normal((t, d)), dtype)
    w = jnp.asarray(rng.standard_normal((vocab, d) if trans_w else (d, vocab)) * 0.3, dtype)
    targets = jnp.asarray(rng.integers(-3, vocab + 3, t), jnp.int32)  # out-of-range targets are clamped
    weights = jnp.asarray(rng.random(t) * (rng.random(t) > 0.2), jnp.float32)
    logits = jnp.dot(x.astype(jnp.float32), (w.T if trans_w else w).astype(jnp.float32), precision="highest")
    for grad_dtype in ("float32", dtype):
        ours = jax.jit(lambda *a: mkl_gemm.head_xent(*a, trans_w=trans_w, z_loss=z, grad_dtype=grad_dtype))(
            x, w, targets, weights)
        ref = cpu_xent.xent(logits, targets, weights, z_loss=z, grad_dtype=grad_dtype)
        for o, r in zip(ours, ref):
            assert o.dtype == r.dtype and o.shape == r.shape
            o, r = np.asarray(o, np.float32), np.asarray(r, np.float32)
            assert np.linalg.norm(o - r) <= (1e-2 if grad_dtype == "bfloat16" else 1e-5) * np.linalg.norm(r)
    with pytest.raises(ValueError, match="d_model"):
        mkl_gemm.head_xent(x, w[:, :-1] if trans_w else w[:-1], targets, weights, trans_w=trans_w)


def _tiny(tied, dtype="float32", matmul_impl="cpu_gemm"):
    return ModelConfig(num_layers=1, d_model=32, num_heads=2, head_dim=16, d_ff=64, vocab_size=250, max_len=32,
                       tie_embeddings=tied, dtype=dtype, matmul_impl=matmul_impl)


@pytest.mark.parametrize("tied", [True, False])
def test_train_loss_is_the_same_with_and_without_the_fusion(tied, monkeypatch):
    cfg = _tiny(tied)
    assert cfg.padded_vocab_size > cfg.vocab_size
    rng = np.random.default_rng(2)
    batch = {"inputs": jnp.asarray(rng.integers(0, 250, (2, 16)), jnp.int32),
             "targets": jnp.asarray(rng.integers(0, 250, (2, 16)), jnp.int32),
             "loss_weights": jnp.ones((2, 16), jnp.float32), "segment_ids": jnp.ones((2, 16), jnp.int32),
             "positions": jnp.tile(jnp.arange(16, dtype=jnp.int32), (2, 1))}
    params = nn.meta.unbox(Decoder(cfg).init(jax.random.PRNGKey(0), batch["inputs"])["params"])
    assert fused_head_impl(cfg, 32) == "cpu_gemm"
    calls = []
    real = head_cross_entropy.head_cross_entropy
    monkeypatch.setattr(head_cross_entropy, "head_cross_entropy", lambda *a, **k: calls.append(1) or real(*a, **k))
    fused = jax.value_and_grad(lambda p: make_loss_fn(cfg, 1e-3)(p, batch)[0])(params)
    assert calls, "the fused head loss was not used"
    unfused = jax.value_and_grad(lambda p: make_loss_fn(cfg, 1e-3, fuse_head=False)(p, batch)[0])(params)
    assert len(calls) == 1
    np.testing.assert_allclose(fused[0], unfused[0], rtol=1e-6)
    for g, r in zip(jax.tree.leaves(fused[1]), jax.tree.leaves(unfused[1])):
        assert np.linalg.norm(g - r) <= 1e-5 * np.linalg.norm(r) + 1e-7


def test_fusion_only_where_custom_calls_run_and_the_head_is_measured(monkeypatch):
    cfg = _tiny(True, matmul_impl="auto")
    assert fused_head_impl(cfg, 32) is None  # a unit-test head: under matmul_impl's probe threshold
    monkeypatch.setattr(matmul_impl, "MIN_PROBE_FLOPS", 0)
    monkeypatch.setattr(matmul_impl, "choose", lambda *a, **k: "xla")
    assert fused_head_impl(cfg, 32) == "xla_f32acc"  # XLA's dot, fp32 logits
    monkeypatch.setenv(head_cross_entropy.ENV_SWITCH, "0")
    assert fused_head_impl(_tiny(True), 32) is None
    monkeypatch.delenv(head_cross_entropy.ENV_SWITCH)
    # A multi-device mesh: custom calls cannot shard, so the loss stays unfused.
    with jax.set_mesh(jax.make_mesh((jax.device_count(),), ("data",))):
        assert fused_head_impl(cfg, 4096) is None


def test_gemm_variant_source_runs_beside_the_kernel(monkeypatch):
    a, b = jnp.ones((5, 7)), jnp.ones((7, 3))
    monkeypatch.setenv(cpu_gemm.SOURCE_ENV, str(cpu_gemm.SOURCE))  # the same source, its own target
    variant = jax.jit(lambda a, b: cpu_gemm.gemm(a, b))
    assert "gopher_cpu_gemm_variant" in variant.lower(a, b).as_text()
    np.testing.assert_array_equal(variant(a, b), np.full((5, 3), 7.0))
    monkeypatch.delenv(cpu_gemm.SOURCE_ENV)
    assert "gopher_cpu_gemm_variant" not in jax.jit(lambda a, b: cpu_gemm.gemm(a, b)).lower(a, b).as_text()
