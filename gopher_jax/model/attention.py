"""Causal self-attention: multi-head, grouped-query and multi-query, with every position encoding.

Query heads are grouped as [kv_heads, group] so MQA/GQA never materialise repeated keys.
Scores, masking and softmax run in float32.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
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


def _weighted_values(scores, mask, value):
    """Returns softmax(scores where mask) @ value, [B, T, K, G, D]: float32 softmax, value's dtype out.

    scores [B, K, G, T, S] (scaled), mask broadcastable to them, value [B, S, K, D].
    """
    scores = jnp.where(mask, scores, NEG_INF)
    probs = jnp.exp(scores - jnp.max(scores, axis=-1, keepdims=True))
    probs = (probs / jnp.sum(probs, axis=-1, keepdims=True)).astype(value.dtype)
    return jnp.einsum("bkgts,bskd->btkgd", probs, value)


def _project_relative(rel_embed, proj, dtype):
    """Returns Transformer-XL position keys [R, H, D]: sinusoids [R, d_model] @ W_{k,R} [d_model, H, D]."""
    return jnp.einsum("re,ehd->rhd", rel_embed.astype(dtype), proj.astype(dtype))


def _use_cpu_kernel(cfg: ModelConfig) -> bool:
    """Whether the training path runs the fused CPU kernel (ModelConfig.attention_impl)."""
    if cfg.attention_impl == "xla":
        return False
    from gopher_jax.kernels import cpu_attention
    if cfg.attention_impl == "cpu_fused":
        if not cpu_attention.available():
            raise RuntimeError(f"ModelConfig.attention_impl='cpu_fused' but the CPU attention kernel is unavailable: "
                               f"{cpu_attention.unavailable_reason()}; use attention_impl='xla' or 'auto'")
        return True
    # auto: only where it is known to win. On a multi-device mesh XLA would replicate the custom call.
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return jax.default_backend() == "cpu" and cpu_attention.available()
    # The mesh's own platform: an ahead-of-time compile for a TPU topology runs on a CPU host.
    device = getattr(mesh, "abstract_device", None)
    platform = getattr(device, "platform", None) or jax.default_backend()
    return mesh.size == 1 and platform == "cpu" and cpu_attention.available()


@jax.custom_vjp
def add_head_bias(q, bias):
    """Returns q [..., H, D] + bias [H, D] (Transformer-XL's u or v) in q's dtype.

    The bias gradient, the cotangent summed over every token, is a GEMV against ones with fp32
    sums: XLA:CPU lowers the plain sum over the leading axes to a strided reduce-window (8 ms per
    call at gopher_44m's [8, 512, 16, 32], 0.14 s of a 4 s bf16 step); the GEMV reads it once.
    """
    return q + bias.astype(q.dtype)


def _add_head_bias_fwd(q, bias):
    return add_head_bias(q, bias), jnp.zeros((0, *bias.shape), bias.dtype)  # carries bias's dtype and shape


def _add_head_bias_bwd(res, g):
    rows = g.size // math.prod(res.shape[1:])
    db = jnp.dot(jnp.ones((rows,), g.dtype), g.reshape(rows, -1), preferred_element_type=jnp.float32)
    return g, db.reshape(res.shape[1:]).astype(res.dtype)


add_head_bias.defvjp(_add_head_bias_fwd, _add_head_bias_bwd)


class Attention(nn.Module):
    """Self-attention of one layer. `rel_embed` and `rel_biases` are used by position='relative'.

    With `decode=True` keys and values go to a 'cache' collection (see `_decode_scores`); the
    training path (decode=False) never touches it.
    """

    config: ModelConfig
    decode: bool = False

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

        if self.decode:
            scores, mask, value = self._decode_scores(grouped(q), key, value, segment_ids, positions, rel_biases)
            return self._output(_weighted_values(scores, mask, value).reshape(b, t, h, d))

        if _use_cpu_kernel(cfg):
            return self._fused(q, key, value, segment_ids, rel_embed, rel_biases)

        if cfg.position == "relative":
            u, v = rel_biases  # [H, D] each, shared by all layers
            content = jnp.einsum("btkgd,bskd->bkgts", grouped(add_head_bias(q, u)), key)
            # Project the sinusoids of distances T-1..0 per layer (Transformer-XL's W_{k,R}).
            rel_keys = self._relative_keys(rel_embed, q.dtype)
            by_distance = jnp.einsum("btkgd,rkgd->bkgtr", grouped(add_head_bias(q, v)),
                                     rel_keys.reshape(t, k, g, d))
            scores = content.astype(jnp.float32) + pos.relative_shift(by_distance.astype(jnp.float32))
        else:
            scores = jnp.einsum("btkgd,bskd->bkgts", grouped(q), key).astype(jnp.float32)
        scores = scores / jnp.sqrt(jnp.float32(d))
        if cfg.position == "alibi":  # added to the scaled scores, as in Press et al.'s code
            scores = scores + pos.alibi_bias(h, t).reshape(k, g, t, t)

        out = _weighted_values(scores, attention_mask(segment_ids), value).reshape(b, t, h, d)
        return self._output(nn.with_logical_constraint(out, (axes.BATCH, axes.LENGTH, axes.HEADS, axes.KV)))

    def _relative_keys(self, rel_embed, dtype):
        """Returns this layer's Transformer-XL position keys [R, H, D]: sinusoids [R, d_model] @ W_{k,R}."""
        return _project_relative(rel_embed, self._rel_proj(), dtype)

    def _rel_proj(self):
        """This layer's W_{k,R} [d_model, H, D] (the 'rel_proj' param)."""
        cfg = self.config
        return self.param("rel_proj", kernel_init(cfg, (axes.EMBED, axes.HEADS, axes.KV)),
                          (cfg.d_model, cfg.num_heads, cfg.head_dim), jnp.dtype(cfg.param_dtype))

    def _cached_relative_keys(self, length: int, first_call, dtype):
        """Returns this layer's position keys [L, H, D] of distances 0..L-1, projected once per cache.

        They depend only on the params and the cache length L, so the first decode call on an empty
        cache (`first_call`: its index is 0, i.e. the prompt) projects them into the cache and every
        later token reads them back: per token and layer that saves an [L, d_model] x [d_model, H*D]
        matmul (~170x the layer's other dense work per token at L=2048 for gopher_44m;
        benchmarks/decode_relpos.py). Same einsum and dtype as the projection it replaces, so the
        logits are bit-identical.
        """
        cfg = self.config
        proj = self._rel_proj()
        cached = self.variable("cache", "relative_keys", jnp.zeros, (length, cfg.num_heads, cfg.head_dim), dtype)
        project = lambda: _project_relative(pos.sinusoids(jnp.arange(length), cfg.d_model), proj, dtype)  # noqa: E731
        cached.value = jax.lax.cond(first_call, project, lambda: cached.value)
        return cached.value

    def _output(self, out):
        """The output projection [B, T, H, D] -> [B, T, d_model], shared by every attention path."""
        cfg = self.config
        return dense(cfg, cfg.d_model, (axes.HEADS, axes.KV, axes.EMBED), axis=(-2, -1),
                     residual_output=True, name="out")(out)

    def _fused(self, q, key, value, segment_ids, rel_embed, rel_biases):
        """The training path through the fused CPU kernel (gopher_jax/kernels): no [T, T] tensors in memory."""
        from gopher_jax.kernels import cpu_attention

        cfg = self.config
        b, t, h, d = q.shape
        kwargs = {}
        if cfg.position == "relative":
            u, v = rel_biases
            rel_keys = self._relative_keys(rel_embed, jnp.float32)
            # rel_embed runs over distances T-1..0 (relative_shift's order); the kernel indexes by distance.
            kwargs.update(q_pos=add_head_bias(q, v), rel_keys=rel_keys[::-1])
            q = add_head_bias(q, u)
        elif cfg.position == "alibi":
            kwargs["alibi_slopes"] = jnp.asarray(pos.alibi_slopes(h))
        # bf16 models run the kernel's bf16 path (bf16 operands, fp32 sums and softmax); else fp32.
        dt = cpu_attention.kernel_dtype(value.dtype)
        if "q_pos" in kwargs:
            kwargs["q_pos"] = kwargs["q_pos"].astype(dt)
        out = cpu_attention.fused_causal_attention(
            q.astype(dt), key.astype(dt), value.astype(dt), segment_ids.astype(jnp.int32),
            scale=float(d) ** -0.5, **kwargs).astype(value.dtype)
        return self._output(nn.with_logical_constraint(out, (axes.BATCH, axes.LENGTH, axes.HEADS, axes.KV)))

    def _decode_scores(self, q, key, value, segment_ids, positions, rel_biases):
        """Appends this call's keys/values to the cache; returns (scaled scores [B,K,G,T,L] f32,
        mask [B,1,1,T,L], cached values [B,L,K,D]).

        The cache holds L slots (L = the length the cache was initialised with), shared slot index
        for the batch, plus each slot's segment id (0 = empty/padding) and absolute position (and,
        for relative positions, the projected position keys of distances 0..L-1). Every
        position encoding is a function of query position minus key position, so scores equal the
        full forward pass of the same (left-padded) sequence.
        """
        cfg = self.config
        b, t, k, g, d = q.shape
        cached_key = self.variable("cache", "cached_key", jnp.zeros, (b, t, k, d), key.dtype)
        cached_value = self.variable("cache", "cached_value", jnp.zeros, (b, t, k, d), value.dtype)
        cached_pos = self.variable("cache", "cached_positions", jnp.zeros, (b, t), jnp.int32)
        cached_seg = self.variable("cache", "cached_segments", jnp.zeros, (b, t), jnp.int32)
        index = self.variable("cache", "index", lambda: jnp.zeros((), jnp.int32))
        i = index.value
        cached_key.value = jax.lax.dynamic_update_slice(cached_key.value, key.astype(cached_key.value.dtype), (0, i, 0, 0))
        cached_value.value = jax.lax.dynamic_update_slice(cached_value.value, value.astype(cached_value.value.dtype),
                                                          (0, i, 0, 0))
        cached_pos.value = jax.lax.dynamic_update_slice(cached_pos.value, positions.astype(jnp.int32), (0, i))
        cached_seg.value = jax.lax.dynamic_update_slice(cached_seg.value, segment_ids.astype(jnp.int32), (0, i))
        index.value = i + t
        keys, values = cached_key.value, cached_value.value
        length = keys.shape[1]

        slot_q = i + jnp.arange(t)
        causal = jnp.arange(length)[None, :] <= slot_q[:, None]  # [T, L]: slots written so far
        same = segment_ids[:, :, None] == cached_seg.value[:, None, :]  # [B, T, L]
        mask = (causal[None] & same)[:, None, None]
        distance = positions[:, :, None] - cached_pos.value[:, None, :]  # [B, T, L]

        if cfg.position == "relative":
            u, v = rel_biases
            scores = jnp.einsum("btkgd,bskd->bkgts", q + u.reshape(k, g, d).astype(q.dtype), keys).astype(jnp.float32)
            # Position scores straight from the distances (no relative_shift): the projected sinusoids
            # of every distance 0..L-1 (cached), each query scored against all of them, then gathered.
            rel_keys = self._cached_relative_keys(length, i == 0, q.dtype).reshape(length, k, g, d)
            by_distance = jnp.einsum("btkgd,rkgd->bkgtr", q + v.reshape(k, g, d).astype(q.dtype), rel_keys)
            index_ = jnp.clip(distance, 0, length - 1)[:, None, None]  # masked entries: any valid index
            scores = scores + jnp.take_along_axis(by_distance.astype(jnp.float32), index_, axis=-1)
        else:
            scores = jnp.einsum("btkgd,bskd->bkgts", q, keys).astype(jnp.float32)
        scores = scores / jnp.sqrt(jnp.float32(d))
        if cfg.position == "alibi":  # added to the scaled scores, as in the training path
            slopes = jnp.asarray(pos.alibi_slopes(cfg.num_heads)).reshape(k, g)
            scores = scores - slopes[None, :, :, None, None] * distance[:, None, None].astype(jnp.float32)
        return scores, mask, values
