"""Re-export: the cross-entropy lives in gopher_jax/ops/cross_entropy.py (shared with the pipeline)."""
from gopher_jax.ops.cross_entropy import cross_entropy

__all__ = ["cross_entropy"]
