"""Logical axis names: every parameter and main activation is annotated with these.

The training issue's rules table (gopher_jax/parallel) maps each name to mesh axes; model code
never mentions mesh axes itself.
"""
BATCH = "batch"  # examples in a batch
LENGTH = "length"  # sequence positions
EMBED = "embed"  # the residual stream, d_model
HEADS = "heads"  # query heads
KV_HEADS = "kv_heads"  # key/value heads (fewer than HEADS under MQA/GQA)
KV = "kv"  # per-head feature size ("key/value size")
MLP = "mlp"  # MLP hidden units
VOCAB = "vocab"  # (padded) vocabulary rows
LAYERS = "layers"  # the stacked-layer axis that scan adds
NORM = "norm"  # norm scales and shifts (kept replicated by every rules table)
POSITIONS = "positions"  # rows of a learned absolute-position table

ALL = (BATCH, LENGTH, EMBED, HEADS, KV_HEADS, KV, MLP, VOCAB, LAYERS, NORM, POSITIONS)
