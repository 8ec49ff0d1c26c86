"""Dense projections with logical axis names, shared by attention, MLP and the output layer.

Our own small module rather than nn.DenseGeneral: DenseGeneral initialises a flattened kernel
and reshapes it, which clashes with logical-axis constraints under a mesh; here the kernel is
created in its real shape and fan-in is computed over the contracted axes.
"""
from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from gopher_jax.model.config import ModelConfig


def kernel_init(config: ModelConfig, names: Sequence[str], *, in_axes: Sequence[int] = (0,),
                residual_output: bool = False):
    """Returns a boxed initializer: std = init_std or 1/sqrt(fan_in), shrunk for residual outputs."""
    scale = 1.0
    if residual_output and config.scale_output_init:
        scale = 1.0 / (2.0 * config.num_layers)  # GPT-2/Megatron: keeps the residual stream's variance flat
    if config.init_std:
        init = nn.initializers.normal(config.init_std * math.sqrt(scale))
    else:
        in_axes = tuple(in_axes)
        out_axes = tuple(i for i in range(len(names)) if i not in in_axes)
        init = nn.initializers.variance_scaling(scale, "fan_in", "truncated_normal",
                                                in_axis=in_axes, out_axis=out_axes)
    return nn.with_logical_partitioning(init, tuple(names))


class Dense(nn.Module):
    """Contracts the last `num_in` axes of x with a kernel [*in_dims, *features] named `names`."""

    config: ModelConfig
    features: tuple[int, ...]
    names: tuple[str, ...]
    num_in: int = 1
    residual_output: bool = False

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        in_dims = x.shape[-self.num_in:]
        kernel = self.param(
            "kernel",
            kernel_init(cfg, self.names, in_axes=range(self.num_in), residual_output=self.residual_output),
            (*in_dims, *self.features), jnp.dtype(cfg.param_dtype))
        dtype = jnp.dtype(cfg.dtype)
        contract = tuple(range(x.ndim - self.num_in, x.ndim)), tuple(range(self.num_in))
        y = jnp.tensordot(x.astype(dtype), kernel.astype(dtype), axes=contract)
        if cfg.use_bias:
            bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, self.names[self.num_in:]),
                              self.features, jnp.dtype(cfg.param_dtype))
            y = y + bias.astype(dtype)
        return y


def dense(config: ModelConfig, features, names: Sequence[str], *, axis=-1, residual_output=False,
          name: str | None = None) -> Dense:
    """Returns a Dense over input `axis` (an int or a tuple of trailing axes) to `features`."""
    features = tuple(features) if isinstance(features, tuple) else (features,)
    num_in = len(axis) if isinstance(axis, tuple) else 1
    return Dense(config, features, tuple(names), num_in=num_in, residual_output=residual_output, name=name)
