"""Causal self-attention: multi-head, grouped-query and multi-query, with every position encoding.

Query heads are grouped as [kv_heads, group] so MQA/GQA never materialise repeated keys.
Scores, masking and softmax run in float32.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from gopher_jax.model import axes
from gopher_jax.model import positions as pos
from gopher_jax.model.config import ModelConfig
from gopher_jax.model.dense import dense, kernel_init

NEG_INF = -1e30  # large finite: fully masked rows (padding) stay NaN-free


def attention_mask(segment_ids: jnp.ndarray) -> jnp.ndarray:
    """Returns [B, 1, 1, T, T] bool: query i may see key j iff j <= i and both are in one segment."""
    t = segment_ids.shape[-1]
    causal = jnp.arange(t)[:, None] >= jnp.arange(t)[None, :]
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    return (causal[None] & same)[:, None, None]


class Attention(nn.Module):
    """Self-attention of one layer. `rel_embed` and `rel_biases` are used by position='relative'."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x, segment_ids, positions, rel_embed=None, rel_biases=None):
        cfg = self.config
        b, t, _ = x.shape
        h, k, d = cfg.num_heads, cfg.kv_heads, cfg.head_dim
        g = h // k
        q = dense(cfg, (h, d), (axes.EMBED, axes.HEADS, axes.KV), name="query")(x)
        key = dense(cfg, (k, d), (axes.EMBED, axes.KV_HEADS, axes.KV), name="key")(x)
        value = dense(cfg, (k, d), (axes.EMBED, axes.KV_HEADS, axes.KV), name="value")(x)
        q = nn.with_logical_constraint(q, (axes.BATCH, axes.LENGTH, axes.HEADS, axes.KV))
        key = nn.with_logical_constraint(key, (axes.BATCH, axes.LENGTH, axes.KV_HEADS, axes.KV))
        value = nn.with_logical_constraint(value, (axes.BATCH, axes.LENGTH, axes.KV_HEADS, axes.KV))

        if cfg.position == "rope":
            q = pos.apply_rope(q, positions, cfg.rope_theta)
            key = pos.apply_rope(key, positions, cfg.rope_theta)

        def grouped(a):  # [B, T, H, D] -> [B, T, K, G, D]
            return a.reshape(b, t, k, g, d)

        if cfg.position == "relative":
            u, v = rel_biases  # [H, D] each, shared by all layers
            content = jnp.einsum("btkgd,bskd->bkgts", grouped(q + u.astype(q.dtype)), key)
            # Project the sinusoids of distances T-1..0 per layer (Transformer-XL's W_{k,R}).
            proj = self.param("rel_proj", kernel_init(cfg, (axes.EMBED, axes.HEADS, axes.KV)),
                              (rel_embed.shape[-1], h, d), jnp.dtype(cfg.param_dtype))
            rel_keys = jnp.einsum("re,ehd->rhd", rel_embed.astype(q.dtype), proj.astype(q.dtype))
            by_distance = jnp.einsum("btkgd,rkgd->bkgtr", grouped(q + v.astype(q.dtype)),
                                     rel_keys.reshape(t, k, g, d))
            scores = content.astype(jnp.float32) + pos.relative_shift(by_distance.astype(jnp.float32))
        else:
            scores = jnp.einsum("btkgd,bskd->bkgts", grouped(q), key).astype(jnp.float32)
            if cfg.position == "alibi":
                scores = scores + pos.alibi_bias(h, t).reshape(k, g, t, t)
        scores = scores / jnp.sqrt(jnp.float32(d))

        scores = jnp.where(attention_mask(segment_ids), scores, NEG_INF)
        probs = jnp.exp(scores - jnp.max(scores, axis=-1, keepdims=True))
        probs = (probs / jnp.sum(probs, axis=-1, keepdims=True)).astype(value.dtype)
        out = jnp.einsum("bkgts,bskd->btkgd", probs, value).reshape(b, t, h, d)
        out = nn.with_logical_constraint(out, (axes.BATCH, axes.LENGTH, axes.HEADS, axes.KV))
        return dense(cfg, cfg.d_model, (axes.HEADS, axes.KV, axes.EMBED), axis=(-2, -1),
                     residual_output=True, name="out")(out)
