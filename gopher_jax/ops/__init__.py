"""Numerical pieces shared by the train step and the pipeline executor (no dependency on either).

cross_entropy.py       token-level cross-entropy with loss weights and z-loss (hand-written VJP)
head_cross_entropy.py  the output head and that loss as one op on CPU (kernels/cpu_xent.cc)
microbatch.py          [B, T] -> [k, B/k, T] microbatch split that keeps each microbatch spread over the mesh
"""
from gopher_jax.ops import head_cross_entropy
from gopher_jax.ops.cross_entropy import cross_entropy
from gopher_jax.ops.microbatch import split_microbatches

__all__ = ["cross_entropy", "head_cross_entropy", "split_microbatches"]
