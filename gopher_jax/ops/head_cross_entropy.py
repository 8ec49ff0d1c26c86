"""The output head and the cross-entropy as one op on CPU: logits GEMM, loss and logit gradient in
one pass, and the backward GEMMs straight from that gradient (Liger-style fused linear
cross-entropy, adapted to the CPU kernels).

Unfused, the loss reads the [tokens, vocab] fp32 logits twice (logsumexp forward, softmax minus
one-hot backward) and XLA:CPU's backward loop fusion, which also rounds the gradient to bf16 for the
head's GEMMs, was the largest cost of the gopher_44m bf16 step after the GEMMs and attention
(benchmarks/README.md). Here kernels/cpu_xent.cc writes, in the forward, the loss and the gradient
of the loss *sum* in the logits, d = w (softmax (1 + 2 z lse) - onehot), already in the GEMM dtype;
the logits are dropped after it. The backward needs only per-row scalars to turn d into the
gradient for any cotangent (g_loss, g_z) of (loss sum, z-loss sum):

    dlogits = (g_loss + g_z c) d + g_z c w onehot,   c = 2 z lse / (1 + 2 z lse)

so dx = dlogits @ W and dW = dlogits^T x are two GEMMs on d plus, only when g_z c is non-zero, a
gather/scatter of W's and x's target rows. With z = 0 (the default) the scale is the scalar g_loss.

When the head's GEMM is "mkl" and it runs in bf16, the logits GEMM and the loss rows are one kernel call
(kernels/mkl_gemm.cc, head_xent): 128 token rows at a time into a per-thread scratch, so the fp32
[tokens, vocab] logits are never whole either (524 MB of fresh pages per gopher_44m step before).

The train step uses `head_cross_entropy` where custom calls run (one CPU device) and the head is
large enough for `matmul_impl` to measure (train/step.py, `fused_head_impl`), with the head's own
GEMM; GOPHER_JAX_FUSED_HEAD_LOSS=0 turns it off (A/B: train_throughput.py --paired_env). Results equal
`cross_entropy(x @ W)` up to float summation order, and up to one bf16 rounding of d for a bf16 head
(the unfused path rounds its gradient to bf16 for the same GEMMs).
"""
from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp

ENV_SWITCH = "GOPHER_JAX_FUSED_HEAD_LOSS"


def available() -> bool:
    """Whether the fused loss can run here: the loss kernel builds and GOPHER_JAX_FUSED_HEAD_LOSS is not 0."""
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return False
    from gopher_jax.kernels import cpu_xent
    return cpu_xent.available()


def head_cross_entropy(x, w, targets, weights, *, vocab: int, transposed: bool, impl: str = "cpu_gemm",
                       z_loss: float = 0.0):
    """Returns (weighted loss sum incl. z-loss, weighted z-loss sum), float32, of the logits
    x @ op(w)[:, :vocab]: x [..., d] in the compute dtype; w the head weight, [V_pad, d] (tied
    embedding table, `transposed`) or [d, V_pad], in its param dtype (its gradient comes back in
    it); targets/weights [...] as for `cross_entropy`. Gradients flow to x and w."""
    return _head_xent(x.reshape(-1, x.shape[-1]), w, targets.reshape(-1), weights.reshape(-1).astype(jnp.float32),
                      int(vocab), bool(transposed), impl, float(z_loss))


def _dot(a, b, impl, **kw):
    from gopher_jax.kernels.matmul_impl import dot
    return dot(a, b, impl=impl, **kw)


def _head_weight(w, vocab: int, transposed: bool, dtype):
    """The head weight's first `vocab` outputs in the compute dtype: [vocab, d] or [d, vocab]."""
    return (w[:vocab] if transposed else w[:, :vocab]).astype(dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7))
def _head_xent(x, w, targets, weights, vocab, transposed, impl, z_loss):
    return _head_xent_fwd(x, w, targets, weights, vocab, transposed, impl, z_loss)[0]


def _head_xent_fwd(x, w, targets, weights, vocab, transposed, impl, z_loss):
    from gopher_jax.kernels import cpu_xent
    wv = _head_weight(w, vocab, transposed, x.dtype)
    if impl == "mkl" and x.dtype == jnp.bfloat16:  # logits in per-thread chunks (kernels/mkl_gemm.cc, head_xent)
        from gopher_jax.kernels import mkl_gemm
        d, loss, lse = mkl_gemm.head_xent(x, wv, targets, weights, trans_w=transposed, z_loss=z_loss,
                                          grad_dtype=x.dtype)
    else:
        logits = _dot(x, wv, impl, trans_b=transposed, out_dtype=jnp.float32)
        d, loss, lse = cpu_xent.xent(logits, targets, weights, z_loss=z_loss, grad_dtype=x.dtype)
    z_sum = jnp.sum(weights * z_loss * jnp.square(lse))
    # w itself is not kept: only its dtype and shape (a zero-size array carries them).
    return (jnp.sum(loss), z_sum), (x, wv, d, lse, targets, weights, jnp.zeros((0, *w.shape), w.dtype))


def _head_xent_bwd(vocab, transposed, impl, z_loss, res, cotangents):
    x, wv, d, lse, targets, weights, w_meta = res
    w_shape = w_meta.shape[1:]
    g_loss, g_z = cotangents
    f32 = jnp.float32
    if z_loss:
        c = 2.0 * z_loss * lse / (1.0 + 2.0 * z_loss * lse)
        row_scale = g_loss + g_z * c  # [T]
        onehot = g_z * c * weights
        xs = (x.astype(f32) * row_scale[:, None]).astype(x.dtype)  # row scales folded into x for dW
    else:  # the common case: one scalar scale, applied to the small [T, d] and [vocab, d] results
        row_scale, xs = g_loss, x
    dx = _dot(d, wv, impl, trans_b=not transposed, out_dtype=f32)
    dw = _dot(d, xs, impl, trans_a=True, out_dtype=f32) if transposed else _dot(xs, d, impl, trans_a=True,
                                                                                out_dtype=f32)
    if z_loss:
        dx = dx * row_scale[:, None]
        y = jnp.clip(targets, 0, vocab - 1)
        dx = dx + onehot[:, None] * jnp.take(wv if transposed else wv.T, y, axis=0).astype(f32)
        extra = jax.ops.segment_sum(onehot[:, None] * x.astype(f32), y, num_segments=vocab)  # [vocab, d]
        dw = dw + (extra if transposed else extra.T)
    else:
        dx, dw = dx * g_loss, dw * g_loss
    pad = w_shape[0] - vocab if transposed else w_shape[1] - vocab
    if pad:
        dw = jnp.pad(dw, ((0, pad), (0, 0)) if transposed else ((0, 0), (0, pad)))
    return dx.astype(x.dtype), dw.astype(w_meta.dtype), None, jnp.zeros_like(weights)


_head_xent.defvjp(_head_xent_fwd, _head_xent_bwd)
