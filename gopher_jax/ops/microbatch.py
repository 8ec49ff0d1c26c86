"""Splitting a global batch into microbatches (gradient accumulation and pipeline schedules)."""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from gopher_jax.model import axes


def split_microbatches(batch: dict, k: int) -> dict:
    """[B, T] -> [k, B/k, T], microbatch j holding rows j, j+k, ... so each stays spread over the mesh."""

    def split(x):
        return jnp.swapaxes(x.reshape(x.shape[0] // k, k, *x.shape[1:]), 0, 1)

    return {key: nn.with_logical_constraint(split(v), (None, axes.BATCH, axes.LENGTH)) for key, v in batch.items()}
