"""The decoder-only transformer: embeddings, a stack of `Block`s (scanned or unrolled), logits."""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from gopher_jax.model import axes
from gopher_jax.model import positions as pos
from gopher_jax.model.block import Block
from gopher_jax.model.config import ModelConfig
from gopher_jax.model.dense import dense, matmul_impl_for, matmul_transposed
from gopher_jax.model.norms import Norm
from gopher_jax.model.remat import remat_policy

EMBEDDING_PARAMS = ("embedder", "position_table", "logits_dense")  # what Kaplan's N excludes


class Decoder(nn.Module):
    """Maps tokens [batch, length] to float32 logits [batch, length, vocab_size].

    `segment_ids` (0 = padding) keep packed documents apart; `positions` (position within each
    document) feed RoPE and learned positions. Both default to one document per row.

    `decode=True` (sampling, gopher_jax/decode.py) appends the tokens' keys/values to a mutable
    'cache' collection and attends to everything cached so far; then `positions` are absolute
    positions and `segment_ids` mark padding (0). Use `init_cache` for an empty cache.

    `head_inputs=True` stops before the output head and returns what it would multiply instead:
    (final-norm output [batch, length, d_model] in the compute dtype, the head weight param, whether
    it is the transposed [vocab_pad, d_model] embedding table), for a loss that fuses the head
    (ops/head_cross_entropy.py).
    """

    config: ModelConfig

    @nn.compact
    def __call__(self, tokens, segment_ids=None, positions=None, decode: bool = False,
                 head_inputs: bool = False):
        cfg = self.config
        b, t = tokens.shape
        if segment_ids is None:
            segment_ids = jnp.ones((b, t), jnp.int32)
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
        dtype = jnp.dtype(cfg.dtype)

        std = cfg.embed_init_std or cfg.d_model**-0.5
        embedder = nn.Embed(
            cfg.padded_vocab_size, cfg.d_model, dtype=dtype, param_dtype=jnp.dtype(cfg.param_dtype),
            embedding_init=nn.with_logical_partitioning(nn.initializers.normal(std), (axes.VOCAB, axes.EMBED)),
            name="embedder")
        x = embedder(tokens).astype(dtype)
        if cfg.position == "learned":
            table = self.param("position_table",
                               nn.with_logical_partitioning(nn.initializers.normal(std), (axes.POSITIONS, axes.EMBED)),
                               (cfg.max_len, cfg.d_model), jnp.dtype(cfg.param_dtype))
            x = x + jnp.take(table, positions, axis=0, mode="clip").astype(dtype)

        rel_embed = rel_biases = None
        if cfg.position == "relative":
            # In decode mode each layer builds its own distance embeddings from its cache length.
            rel_embed = None if decode else pos.sinusoids(pos.relative_distances(t), cfg.d_model)
            bias_init = nn.with_logical_partitioning(nn.initializers.zeros, (axes.HEADS, axes.KV))
            shape = (cfg.num_heads, cfg.head_dim)
            # Transformer-XL's u and v: learned content and position biases shared by all layers.
            rel_biases = (self.param("content_bias", bias_init, shape, jnp.dtype(cfg.param_dtype)),
                          self.param("position_bias", bias_init, shape, jnp.dtype(cfg.param_dtype)))

        block = Block
        policy = remat_policy(cfg.remat_policy)
        if policy is not None and not decode:  # nothing to rematerialise without a backward pass
            block = nn.remat(Block, policy=policy, prevent_cse=not cfg.scan_layers)
        args = (segment_ids, positions, rel_embed, rel_biases)
        if cfg.scan_layers:
            stack = nn.scan(
                block, variable_axes={"params": 0, "cache": 0}, split_rngs={"params": True},
                in_axes=(nn.broadcast,) * len(args), length=cfg.num_layers, unroll=cfg.scan_unroll,
                metadata_params={nn.PARTITION_NAME: axes.LAYERS})(cfg, decode=decode, name="layers")
            x, _ = stack(x, *args)
        else:
            for i in range(cfg.num_layers):
                x, _ = block(cfg, decode=decode, name=f"layers_{i}")(x, *args)

        x = Norm(cfg, name="final_norm")(x)
        if head_inputs:
            if cfg.tie_embeddings:
                return x.astype(dtype), embedder.embedding, True
            # Read, not created: this mode runs on existing params only (init builds the full model).
            return x.astype(dtype), nn.meta.unbox(self.variables["params"]["logits_dense"]["kernel"]), False
        if cfg.tie_embeddings:
            table = embedder.embedding  # param dtype: multiplied in `dtype`, fp32 logits (no bf16 rounding)
            # init: shapes only, no probe
            impl = "xla" if self.is_initializing() else head_matmul_impl(cfg, math.prod(x.shape[:-1]))
            logits = matmul_transposed(x.astype(dtype), table, impl, "float32")
        else:
            logits = dense(cfg, cfg.padded_vocab_size, (axes.EMBED, axes.VOCAB), name="logits_dense")(x)
        logits = nn.with_logical_constraint(logits, (axes.BATCH, axes.LENGTH, axes.VOCAB))
        # Padding rows exist only for sharding; the caller sees exactly vocab_size logits.
        return logits[..., : cfg.vocab_size].astype(jnp.float32)


def head_matmul_impl(config: ModelConfig, rows: int) -> str:
    """Returns the GEMM (`matmul_impl_for`) of the output head for `rows` tokens: x [rows, d] times
    the tied [vocab_pad, d] table (transposed) or the [d, vocab_pad] `logits_dense` kernel."""
    dtype = jnp.dtype(config.dtype)
    return matmul_impl_for(config, dtype, rows, config.d_model, config.padded_vocab_size,
                           transposed_w=config.tie_embeddings)


def unstack_layers(params: dict, num_layers: int) -> dict:
    """Converts scanned params (`layers` with a leading layer axis) to the unrolled layout."""
    params = dict(params)
    stacked = params.pop("layers")
    for i in range(num_layers):
        params[f"layers_{i}"] = jax.tree.map(lambda a, i=i: a[i], stacked)
    return params


def init_cache(config: ModelConfig, batch: int, length: int) -> dict:
    """Returns an empty KV cache (the 'cache' collection) for `batch` rows of up to `length` tokens."""
    tokens = jnp.zeros((batch, length), jnp.int32)
    shapes = jax.eval_shape(lambda: Decoder(config).init(jax.random.key(0), tokens, decode=True))["cache"]
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), nn.meta.unbox(shapes))
