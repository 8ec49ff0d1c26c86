"""Token-level cross-entropy over packed batches, with loss weights and an optional z-loss."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def cross_entropy(logits, targets, weights, z_loss: float = 0.0):
    """Returns (sum of weighted token losses incl. z-loss, sum of weighted z-loss terms), float32.

    Sums, not means: the train step divides by the global token weight once, so k microbatches
    give exactly the gradient of one batch of k*b.
    """
    logits = logits.astype(jnp.float32)
    log_z = jax.nn.logsumexp(logits, axis=-1)
    target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    nll = log_z - target_logit
    z_term = z_loss * jnp.square(log_z)
    weights = weights.astype(jnp.float32)
    return jnp.sum((nll + z_term) * weights), jnp.sum(z_term * weights)
