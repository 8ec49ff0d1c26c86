"""The feed-forward block: GELU (Gopher) or SwiGLU (PaLM), hidden width `ffw_dim`."""
from __future__ import annotations

import flax.linen as nn
import jax

from gopher_jax.model import axes
from gopher_jax.model.config import ModelConfig
from gopher_jax.model.dense import dense


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
            hidden = jax.nn.gelu(hidden)
        hidden = nn.with_logical_constraint(hidden, (axes.BATCH, axes.LENGTH, axes.MLP))
        return dense(cfg, cfg.d_model, (axes.MLP, axes.EMBED), residual_output=True, name="wo")(hidden)
