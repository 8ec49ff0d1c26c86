"""The feed-forward block: GELU (Gopher) or SwiGLU (PaLM), hidden width `ffw_dim`."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from gopher_jax.model import axes
from gopher_jax.model.config import ModelConfig
from gopher_jax.model.dense import dense


_SQRT_2_OVER_PI = 0.7978845608028654  # sqrt(2 / pi), the tanh approximation's constant
_CUBIC = 0.044715  # the tanh approximation's cubic coefficient (Hendrycks & Gimpel 2016)


@jax.custom_vjp
def gelu(x):
    """jax.nn.gelu (tanh approximation) computed in float32 and returned in x's dtype; its backward
    keeps only its input.

    Autodiff of the tanh form saves ~5 intermediates of the [tokens, d_ff] hidden layer per layer
    for the backward pass; recomputing the derivative from x costs a few flops per element
    instead of that memory traffic (the MLP's largest elementwise cost on CPU). Both directions
    run in float32 whatever x's dtype: with bf16 x, jax.nn.gelu would round every intermediate
    (and sqrt(2/pi) itself, to 0.797) to bf16, and XLA:CPU then splits the derivative into four
    loops over the hidden layer instead of one.
    """
    return jax.nn.gelu(x.astype(jnp.float32)).astype(x.dtype)


def _gelu_fwd(x):
    return gelu(x), x


def _gelu_bwd(x, g):
    # Written out rather than jax.vjp of the fp32 formula: both compile to one loop, but this one
    # has 21 flops per element against 23 (XLA's cost analysis), and the pipeline schedules are
    # priced from the model's compiled costs (tests/parallel/test_pipeline_memory.py).
    x32 = x.astype(jnp.float32)
    t = jnp.tanh(_SQRT_2_OVER_PI * (x32 + _CUBIC * x32 * x32 * x32))
    # d/dx [x/2 (1 + t)] = (1 + t)/2 + x/2 (1 - t^2) sqrt(2/pi) (1 + 3 c x^2)
    dt = _SQRT_2_OVER_PI * (1.0 + 3.0 * _CUBIC * x32 * x32)
    grad = 0.5 * (1.0 + t) + 0.5 * x32 * (1.0 - t * t) * dt
    return ((g.astype(jnp.float32) * grad).astype(x.dtype),)


gelu.defvjp(_gelu_fwd, _gelu_bwd)


class Mlp(nn.Module):
    """d_model -> ffw_dim -> d_model; SwiGLU adds a gate projection (silu(gate) * up)."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        hidden = dense(cfg, cfg.ffw_dim, (axes.EMBED, axes.MLP), name="wi")(x)
        if cfg.mlp == "swiglu":
            gate = dense(cfg, cfg.ffw_dim, (axes.EMBED, axes.MLP), name="wi_gate")(x)
            hidden = jax.nn.silu(gate) * hidden
        else:
            hidden = gelu(hidden)
        hidden = nn.with_logical_constraint(hidden, (axes.BATCH, axes.LENGTH, axes.MLP))
        return dense(cfg, cfg.d_model, (axes.MLP, axes.EMBED), residual_output=True, name="wo")(hidden)
