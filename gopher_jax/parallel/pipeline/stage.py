"""The decoder cut into pipeline pieces that read the model's own parameter tree.

`Decoder` (gopher_jax/model/decoder.py) is one compact Flax module, so its embedding and logits
cannot be called on their own. These three modules rebuild exactly its pieces under the same names,
so they apply to slices of the *unchanged* parameter tree (checkpoints do not depend on the pipeline):

  embed(outer, tokens, positions)      -> x               ("embedder", "position_table")
  stage(layers_slice, x, ...)          -> x               ("layers": a [layers_per_stage, ...] slice,
                                                            the same `Block`, scan and remat policy)
  head(outer, x)                       -> fp32 logits     ("final_norm", tied "embedder" or "logits_dense")

`outer` is the parameter tree without "layers". Transformer-XL's shared u/v biases
("content_bias", "position_bias") live in `outer` and are passed to every stage.
`tests/parallel/test_pipeline_step.py` checks the composition equals `Decoder` (loss and gradients).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from gopher_jax.model import axes
from gopher_jax.model import positions as pos
from gopher_jax.model.block import Block
from gopher_jax.model.config import ModelConfig
from gopher_jax.model.dense import WGRAD_COTANGENTS, Dense, dense
from gopher_jax.model.norms import Norm
from gopher_jax.model.remat import remat_policy


def _embedder(cfg: ModelConfig) -> nn.Embed:
    std = cfg.embed_init_std or cfg.d_model**-0.5
    return nn.Embed(cfg.padded_vocab_size, cfg.d_model, dtype=jnp.dtype(cfg.dtype),
                    param_dtype=jnp.dtype(cfg.param_dtype),
                    embedding_init=nn.with_logical_partitioning(nn.initializers.normal(std), (axes.VOCAB, axes.EMBED)),
                    name="embedder")


class Embed(nn.Module):
    """The Decoder's token (+ learned position) embedding, looked up by a one-hot matmul.

    Inside the partially manual pipeline region, XLA's SPMD partitioner (jax 0.10.2; libtpu 0.0.42.1
    and CPU alike) aborts on a gather whose table is sharded over `tensor`/`fsdp` ("Check failed:
    partition_group_list..." in PartitionGather). one_hot(tokens) @ table has no gather, its gradient
    no scatter, and it is exact (one nonzero product per output, fp32 accumulation). Cost: 2 V d
    FLOPs per token on the first stage only (~0.4% of a 280B step).
    """

    config: ModelConfig

    @nn.compact
    def __call__(self, tokens, positions):
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        table = _embedder(cfg).embedding.astype(dtype)
        one_hot = jax.nn.one_hot(tokens, table.shape[0], dtype=dtype)
        x = jnp.einsum("btv,vd->btd", one_hot, table, precision=jax.lax.Precision.HIGHEST,
                       preferred_element_type=jnp.float32).astype(dtype)
        if cfg.position == "learned":
            std = cfg.embed_init_std or cfg.d_model**-0.5
            table = self.param("position_table",
                               nn.with_logical_partitioning(nn.initializers.normal(std), (axes.POSITIONS, axes.EMBED)),
                               (cfg.max_len, cfg.d_model), jnp.dtype(cfg.param_dtype))
            x = x + jnp.take(table, positions, axis=0, mode="clip").astype(dtype)
        return x


class Head(nn.Module):
    config: ModelConfig

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        x = Norm(cfg, name="final_norm")(x)
        if cfg.tie_embeddings:
            logits = _embedder(cfg).attend(x)
        else:
            logits = dense(cfg, cfg.padded_vocab_size, (axes.EMBED, axes.VOCAB), name="logits_dense")(x)
        logits = nn.with_logical_constraint(logits, (axes.BATCH, axes.LENGTH, axes.VOCAB))
        return logits[..., : cfg.vocab_size].astype(jnp.float32)


class Stage(nn.Module):
    """`num_layers` consecutive Blocks, scanned like the Decoder's stack (params under "layers")."""

    config: ModelConfig
    num_layers: int

    @nn.compact
    def __call__(self, x, segment_ids, positions, rel_embed, rel_biases):
        cfg = self.config
        block = Block
        policy = remat_policy(cfg.remat_policy)
        if policy is not None:
            block = nn.remat(Block, policy=policy, prevent_cse=False)
        args = (segment_ids, positions, rel_embed, rel_biases)
        # the zero-bubble split backward's per-layer matmul input taps / output cotangents (`stage`)
        stack = nn.scan(block, variable_axes={"params": 0, WGRAD_TAPS: 0, WGRAD_COTANGENTS: 0},
                        split_rngs={"params": True},
                        in_axes=(nn.broadcast,) * len(args), length=self.num_layers, unroll=cfg.scan_unroll,
                        metadata_params={nn.PARTITION_NAME: axes.LAYERS})(cfg, name="layers")
        x, _ = stack(x, *args)
        return x


OUTER_EMBED = ("embedder", "position_table")
OUTER_HEAD = ("final_norm", "embedder", "logits_dense")


def _pick(tree: dict, keys) -> dict:
    return {k: tree[k] for k in keys if k in tree}


def embed(cfg: ModelConfig, outer: dict, tokens, positions):
    return Embed(cfg).apply({"params": _pick(outer, OUTER_EMBED)}, tokens, positions)


def head(cfg: ModelConfig, outer: dict, x):
    return Head(cfg).apply({"params": _pick(outer, OUTER_HEAD)}, x)


def _stage_args(cfg: ModelConfig, outer: dict, x, segment_ids, positions) -> tuple:
    """Stage's call arguments; Transformer-XL's sinusoid table and shared u/v biases when relative."""
    rel_embed = rel_biases = None
    if cfg.position == "relative":
        rel_embed = pos.sinusoids(pos.relative_distances(x.shape[1]), cfg.d_model)
        rel_biases = (outer["content_bias"], outer["position_bias"])
    return x, segment_ids, positions, rel_embed, rel_biases


# Zero-bubble's split backward (deferred_wgrad.py) needs, per Dense of the stage, its matmul input x and
# output cotangent dy, both produced by I (the input-gradient pass), so what W keeps lives from I to W
# only. dy is the cotangent of a zero perturbation of the output (model/dense.py, WGRAD_COTANGENTS). x
# comes from a *tap*: an identity whose VJP returns the primal x as the cotangent of a zero probe
# (collection WGRAD_TAPS). Under remat the backward recomputes each layer, so R keeps only what the
# remat policy keeps and I emits x while it recomputes. Denses fed the same array (query, key and
# value read one normed input; wi and wi_gate another) share one tap: the later ones are recorded as
# aliases of the first (`TapLayout.aliases`) and keep nothing.
WGRAD_TAPS = "wgrad_taps"


@jax.custom_vjp
def _tap(x, probe):
    del probe
    return x


def _tap_fwd(x, probe):
    del probe
    return x, x


def _tap_bwd(x, g):
    return g, x  # the probe's "cotangent" is the value x itself


_tap.defvjp(_tap_fwd, _tap_bwd)


class _TapInputs:
    """Flax method interceptor for Stage.apply in the split backward: taps each Dense's input once."""

    def __init__(self):
        self.tapped = {}  # id(input) -> (input, its Dense's path): strong refs keep the ids unique
        self.aliases = []  # (path of a Dense, path of the Dense whose tap holds its input)

    def __call__(self, next_fun, args, kwargs, context):
        m = context.module
        if not isinstance(m, Dense) or context.method_name != "__call__" or m.is_initializing():
            return next_fun(*args, **kwargs)
        x = args[0]
        mutable = m.is_mutable_collection(WGRAD_TAPS)
        if id(x) in self.tapped:
            if mutable:
                self.aliases.append((tuple(m.path), self.tapped[id(x)][1]))
            return next_fun(*args, **kwargs)
        if not (mutable or m.has_variable(WGRAD_TAPS, "x")):
            return next_fun(*args, **kwargs)
        self.tapped[id(x)] = (x, tuple(m.path))
        dtype = jnp.dtype(m.config.dtype)
        probe = m.variable(WGRAD_TAPS, "x", lambda: jnp.zeros(x.shape, dtype)).value
        return next_fun(_tap(x.astype(dtype), probe), *args[1:], **kwargs)


def stage(cfg: ModelConfig, layers: dict, outer: dict, x, segment_ids, positions, split=None):
    """Applies one stage: `layers` is the Decoder's "layers" subtree sliced to [layers_per_stage, ...].

    `split` = (cotangents, taps): the zero probes of `split_shapes` (zero-bubble's split backward,
    deferred_wgrad.py); differentiating w.r.t. them gives every Dense's output cotangent and input."""
    num = jax.tree.leaves(layers)[0].shape[0]
    args = _stage_args(cfg, outer, x, segment_ids, positions)
    if split is None:
        return Stage(cfg, num).apply({"params": {"layers": layers}}, *args)
    cotangents, taps = split
    with nn.intercept_methods(_TapInputs()):
        return Stage(cfg, num).apply({"params": {"layers": layers}, WGRAD_COTANGENTS: cotangents,
                                      WGRAD_TAPS: taps}, *args)


def split_shapes(cfg: ModelConfig, layers: dict, outer: dict, x, segment_ids, positions):
    """(cotangent shapes, tap shapes, aliases) of the split backward: ShapeDtypeStruct trees of the stage's
    WGRAD_COTANGENTS (one [layers, ..., out] per Dense) and WGRAD_TAPS (one [layers, ..., in] per distinct
    Dense input), and the ((Dense path), (path of the Dense whose tap it reads)) pairs."""
    taps = _TapInputs()

    # Everything the stage reads is an argument of the traced function: abstract inputs (ShapeDtypeStruct,
    # as compiled_op_costs passes) must become tracers, not closed-over constants.
    def probe(layers, outer, x, segment_ids, positions):
        num = jax.tree.leaves(layers)[0].shape[0]
        with nn.intercept_methods(taps):
            _, state = Stage(cfg, num).apply({"params": {"layers": layers}},
                                             *_stage_args(cfg, outer, x, segment_ids, positions),
                                             mutable=[WGRAD_COTANGENTS, WGRAD_TAPS])
        return state[WGRAD_COTANGENTS], state[WGRAD_TAPS]
    cots, tap_shapes = jax.eval_shape(probe, layers, outer, x, segment_ids, positions)
    return cots, tap_shapes, tuple(dict.fromkeys(taps.aliases))
