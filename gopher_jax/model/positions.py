"""Position encodings: Transformer-XL relative (sinusoids + efficient shift), RoPE, ALiBi.

Learned absolute positions are a plain table in `decoder.py`.
"""
from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np


def sinusoids(positions: jnp.ndarray, dim: int) -> jnp.ndarray:
    """Returns [..., dim] float32 sinusoidal embeddings [sin(p*w), cos(p*w)] (Vaswani et al.)."""
    half = dim // 2
    inv_freq = 1.0 / (10_000.0 ** (jnp.arange(half, dtype=jnp.float32) * 2.0 / dim))
    angles = positions.astype(jnp.float32)[..., None] * inv_freq
    out = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)
    if dim % 2:
        out = jnp.pad(out, [(0, 0)] * (out.ndim - 1) + [(0, 1)])
    return out


def relative_distances(length: int) -> jnp.ndarray:
    """Returns the distances T-1, T-2, ..., 0: the order `relative_shift` expects."""
    return jnp.arange(length - 1, -1, -1)


def relative_shift(x: jnp.ndarray) -> jnp.ndarray:
    """Turns scores by distance into scores by key position, without a gather.

    x[..., i, c] is the score of query i against distance T-1-c. Returns y[..., i, j] =
    x[..., i, T-1-i+j], i.e. the score for distance i-j, valid for j <= i (entries j > i are
    garbage that the causal mask removes). This is Transformer-XL's pad-and-reshape trick:
    one zero column, a reshape and a slice.
    """
    *lead, t_q, t_k = x.shape
    x = jnp.pad(x, [(0, 0)] * len(lead) + [(0, 0), (1, 0)])
    x = x.reshape(*lead, t_k + 1, t_q)[..., 1:, :]
    return x.reshape(*lead, t_q, t_k)


def apply_rope(x: jnp.ndarray, positions: jnp.ndarray, theta: float) -> jnp.ndarray:
    """Rotates [batch, length, heads, dim] features by position (rotate-half form); same dtype."""
    dim = x.shape[-1]
    half = dim // 2
    inv_freq = 1.0 / (theta ** (jnp.arange(half, dtype=jnp.float32) * 2.0 / dim))
    angles = positions.astype(jnp.float32)[:, :, None, None] * inv_freq  # [B, T, 1, half]
    sin, cos = jnp.sin(angles), jnp.cos(angles)
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x.dtype)


def alibi_slopes(num_heads: int) -> np.ndarray:
    """Returns ALiBi's per-head slopes (Press et al. 2022): a geometric sequence, as in their code."""

    def power_of_two(n):
        start = 2.0 ** (-(2.0 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(num_heads).is_integer():
        return np.asarray(power_of_two(num_heads), np.float32)
    closest = 2 ** math.floor(math.log2(num_heads))
    extra = power_of_two(2 * closest)[0::2][: num_heads - closest]
    return np.asarray(power_of_two(closest) + extra, np.float32)


def alibi_bias(num_heads: int, length: int) -> jnp.ndarray:
    """Returns the [heads, T, T] float32 bias -slope_h * (i - j) (only j <= i is ever used)."""
    distance = jnp.arange(length)[:, None] - jnp.arange(length)[None, :]
    return -jnp.asarray(alibi_slopes(num_heads))[:, None, None] * distance.astype(jnp.float32)
