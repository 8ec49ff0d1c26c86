"""RMSNorm (Gopher) and LayerNorm, computed in float32 whatever the activation dtype."""
from __future__ import annotations

from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp

from gopher_jax.model import axes
from gopher_jax.model.config import ModelConfig


@partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def rms_norm(x, scale, eps: float, out_dtype):
    """x / sqrt(mean(x^2) + eps) * scale over the last axis, in float32, returned in `out_dtype`.

    The backward is written out (it keeps x and the scale, and recomputes the per-row rms):
    autodiff of `x32 * r * scale` keeps `scale` broadcast to x's full shape in float32 as a
    residual, an extra [tokens, d_model] array written and read per norm per step (~20% of the
    norms' time in the profiled 44M bf16 CPU step, benchmarks/README.md).
    """
    return _rms_forward(x, scale, eps).astype(out_dtype)


def _inverse_rms(x32, eps):
    """1 / sqrt(mean(x^2) + eps) over the last axis (kept for broadcasting), of float32 x."""
    return jnp.reciprocal(jnp.sqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + eps))


def _rms_forward(x, scale, eps):
    x32 = x.astype(jnp.float32)
    return x32 * _inverse_rms(x32, eps) * scale.astype(jnp.float32)


def _rms_fwd(x, scale, eps, out_dtype):
    return rms_norm(x, scale, eps, out_dtype), (x, scale)


def _rms_bwd(eps, out_dtype, residuals, dy):
    # y_i = s_i x_i r with r = (mean(x^2) + eps)^(-1/2); for g = dy * s:
    # dx = r (g - x r^2 mean(g x)),  ds = sum over rows of dy x r.
    x, scale = residuals
    x32, s32, dy32 = x.astype(jnp.float32), scale.astype(jnp.float32), dy.astype(jnp.float32)
    r = _inverse_rms(x32, eps)
    g = dy32 * s32
    dx = r * (g - x32 * (r * r) * jnp.mean(g * x32, axis=-1, keepdims=True))
    ds = jnp.sum((dy32 * x32 * r).reshape(-1, x.shape[-1]), axis=0)
    return dx.astype(x.dtype), ds.astype(scale.dtype)


rms_norm.defvjp(_rms_fwd, _rms_bwd)


class Norm(nn.Module):
    """Pre-norm: RMSNorm (scale only, Zhang & Sennrich 2019) or LayerNorm (centre, scale, shift)."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        init = nn.with_logical_partitioning(nn.initializers.ones, (axes.NORM,))
        scale = self.param("scale", init, (x.shape[-1],), jnp.dtype(cfg.param_dtype))
        if cfg.norm == "rmsnorm" and not cfg.use_bias:
            return rms_norm(x, scale, cfg.norm_eps, jnp.dtype(cfg.dtype))
        x32 = x.astype(jnp.float32)
        if cfg.norm == "layernorm":
            x32 = x32 - jnp.mean(x32, axis=-1, keepdims=True)
        y = x32 * _inverse_rms(x32, cfg.norm_eps) * scale.astype(jnp.float32)
        if cfg.norm == "layernorm" or cfg.use_bias:
            zeros = nn.with_logical_partitioning(nn.initializers.zeros, (axes.NORM,))
            y = y + self.param("bias", zeros, (x.shape[-1],), jnp.dtype(cfg.param_dtype)).astype(jnp.float32)
        return y.astype(jnp.dtype(cfg.dtype))
