"""Hand-written kernels (C++ through the XLA FFI) with pure-jnp fallbacks."""
from gopher_jax.kernels.cpu_attention import (available, fused_causal_attention,
                                              reference_causal_attention, unavailable_reason)

__all__ = ["available", "fused_causal_attention", "reference_causal_attention",
           "unavailable_reason"]
