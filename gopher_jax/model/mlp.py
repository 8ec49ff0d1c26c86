"""The feed-forward block: GELU (Gopher) or SwiGLU (PaLM), hidden width `ffw_dim`."""
from __future__ import annotations

import flax.linen as nn
import jax

from gopher_jax.model import axes
from gopher_jax.model.config import ModelConfig
from gopher_jax.model.dense import dense


@jax.custom_vjp
def gelu(x):
    """jax.nn.gelu (tanh approximation) whose backward keeps only its input.

    Autodiff of the tanh form saves ~5 intermediates of the [tokens, d_ff] hidden layer per layer
    for the backward pass; recomputing the derivative from x costs a few flops per element
    instead of that memory traffic (the MLP's largest elementwise cost on CPU).
    """
    return jax.nn.gelu(x)


def _gelu_fwd(x):
    return jax.nn.gelu(x), x


def _gelu_bwd(x, g):
    _, vjp = jax.vjp(jax.nn.gelu, x)
    return vjp(g)


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
