"""Numerical pieces shared by the train step and the pipeline executor (no dependency on either).

cross_entropy.py  token-level cross-entropy with loss weights and z-loss (hand-written VJP)
microbatch.py     [B, T] -> [k, B/k, T] microbatch split that keeps each microbatch spread over the mesh
"""
from gopher_jax.ops.cross_entropy import cross_entropy
from gopher_jax.ops.microbatch import split_microbatches

__all__ = ["cross_entropy", "split_microbatches"]
