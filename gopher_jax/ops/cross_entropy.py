"""Token-level cross-entropy over packed batches, with loss weights and an optional z-loss.

The gradient is written by hand (a custom VJP): autodiff of logsumexp keeps exp(logits - max) from
the forward pass, a second [tokens, vocab] float32 array next to the logits, and the backward then
reads it and writes the logit gradient. Here the forward is a reduction only (XLA fuses the exp into
it) and the backward recomputes the softmax in the same pass that writes the gradient: one
[tokens, vocab] array less to write, keep and read per step (benchmarks/README.md has the numbers).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def cross_entropy(logits, targets, weights, z_loss: float = 0.0, one_hot_pick: bool = False):
    """Returns (sum of weighted token losses incl. z-loss, sum of weighted z-loss terms), float32.

    Sums, not means: the train step divides by the global token weight once, so k microbatches
    give exactly the gradient of one batch of k*b. `one_hot_pick` reads the target logit with a
    one-hot product instead of a gather: inside a partially manual shard_map XLA's SPMD partitioner
    (jax 0.10.2) aborts on a gather over a vocab axis sharded by `tensor`; the product partitions
    cleanly and is numerically equal. Gradients flow to `logits` only.
    """
    return _cross_entropy(logits.astype(jnp.float32), targets, weights.astype(jnp.float32),
                          float(z_loss), bool(one_hot_pick))


def _target_mask(targets, vocab: int):
    return targets[..., None] == jnp.arange(vocab, dtype=targets.dtype)


def _forward(logits, targets, weights, z_loss, one_hot_pick):
    log_z = jax.nn.logsumexp(logits, axis=-1)
    if one_hot_pick:
        target_logit = jnp.sum(jnp.where(_target_mask(targets, logits.shape[-1]), logits, 0.0), axis=-1)
    else:
        target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    z_term = z_loss * jnp.square(log_z)
    return (jnp.sum((log_z - target_logit + z_term) * weights), jnp.sum(z_term * weights)), log_z


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _cross_entropy(logits, targets, weights, z_loss, one_hot_pick):
    return _forward(logits, targets, weights, z_loss, one_hot_pick)[0]


def _cross_entropy_fwd(logits, targets, weights, z_loss, one_hot_pick):
    out, log_z = _forward(logits, targets, weights, z_loss, one_hot_pick)
    return out, (logits, targets, weights, log_z)


def _cross_entropy_bwd(z_loss, one_hot_pick, res, cotangents):
    del one_hot_pick  # the backward never gathers
    logits, targets, weights, log_z = res
    g_loss, g_z = cotangents
    # d/dlogits of w * (log_z - logit[target] + z * log_z^2) is w * (p * (1 + 2 z log_z) - onehot),
    # and of the z-sum w * 2 z log_z * p; p = exp(logits - log_z).
    per_token = weights * (g_loss * (1.0 + 2.0 * z_loss * log_z) + g_z * 2.0 * z_loss * log_z)
    probs = jnp.exp(logits - log_z[..., None])
    grad = probs * per_token[..., None] - jnp.where(
        _target_mask(targets, logits.shape[-1]), (weights * g_loss)[..., None], 0.0)
    return grad, None, jnp.zeros_like(weights)


_cross_entropy.defvjp(_cross_entropy_fwd, _cross_entropy_bwd)
