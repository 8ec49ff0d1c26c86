"""RMSNorm (Gopher) and LayerNorm, computed in float32 whatever the activation dtype."""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from gopher_jax.model import axes
from gopher_jax.model.config import ModelConfig


class Norm(nn.Module):
    """Pre-norm: RMSNorm (scale only, Zhang & Sennrich 2019) or LayerNorm (centre, scale, shift)."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        x32 = x.astype(jnp.float32)
        if cfg.norm == "layernorm":
            x32 = x32 - jnp.mean(x32, axis=-1, keepdims=True)
        y = x32 * jnp.reciprocal(jnp.sqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + cfg.norm_eps))
        init = nn.with_logical_partitioning(nn.initializers.ones, (axes.NORM,))
        y = y * self.param("scale", init, (x.shape[-1],), jnp.dtype(cfg.param_dtype)).astype(jnp.float32)
        if cfg.norm == "layernorm" or cfg.use_bias:
            zeros = nn.with_logical_partitioning(nn.initializers.zeros, (axes.NORM,))
            y = y + self.param("bias", zeros, (x.shape[-1],), jnp.dtype(cfg.param_dtype)).astype(jnp.float32)
        return y.astype(jnp.dtype(cfg.dtype))
