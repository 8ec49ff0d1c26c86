"""Dense projections with logical axis names, shared by attention, MLP and the output layer."""
from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from gopher_jax.model.config import ModelConfig


def kernel_init(config: ModelConfig, names: Sequence[str], *, residual_output: bool = False):
    """Returns a boxed initializer: std = init_std or 1/sqrt(fan_in), shrunk for residual outputs."""
    scale = 1.0
    if residual_output and config.scale_output_init:
        scale = 1.0 / (2.0 * config.num_layers)  # GPT-2/Megatron: keeps the residual stream's variance flat
    if config.init_std:
        init = nn.initializers.normal(config.init_std * math.sqrt(scale))
    else:
        init = nn.initializers.variance_scaling(scale, "fan_in", "truncated_normal")
    return nn.with_logical_partitioning(init, tuple(names))


def dense(config: ModelConfig, features, names: Sequence[str], *, axis=-1, residual_output=False,
          name: str | None = None) -> nn.DenseGeneral:
    """Returns a DenseGeneral whose kernel carries `names` (input axes then output axes)."""
    features_t = features if isinstance(features, tuple) else (features,)
    return nn.DenseGeneral(
        features=features,
        axis=axis,
        use_bias=config.use_bias,
        dtype=jnp.dtype(config.dtype),
        param_dtype=jnp.dtype(config.param_dtype),
        kernel_init=kernel_init(config, names, residual_output=residual_output),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, tuple(names[-len(features_t):])),
        name=name,
    )
