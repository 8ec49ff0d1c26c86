"""Softmax cross-entropy rows with their logit gradient in one pass (cpu_xent.cc), through the XLA FFI.

`xent(logits, targets, weights, z_loss=, grad_dtype=)` returns (d, loss, lse) for fp32 logits
[T, V]: per-row weighted losses (including the z-loss), log-partition functions, and
d = w * (softmax * (1 + 2 z lse) - onehot(target)), the gradient of the loss in the logits, in
`grad_dtype` (float32, or bfloat16 for a bf16 head's backward GEMMs). ops/head_cross_entropy.py
builds the output head's fused loss on it. The library is built with g++ on first use and cached
per host like the other kernels; GOPHER_JAX_DISABLE_CPU_XENT=1 turns it off.
"""
from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from gopher_jax.kernels.ffi_library import FfiLibrary

__all__ = ["available", "unavailable_reason", "xent"]

_TARGET = "gopher_cpu_xent_v1"
_LIBRARY = FfiLibrary(Path(__file__).with_name("cpu_xent.cc"), "gopher_cpu_xent", {_TARGET: "GopherXent"},
                      "GOPHER_JAX_DISABLE_CPU_XENT")


def available() -> bool:
    """True if the kernel library is built and registered (builds it on the first call)."""
    return _LIBRARY.available()


def unavailable_reason() -> str:
    """Why `available()` is False ('' if it is True)."""
    return _LIBRARY.unavailable_reason()


def loss_outputs(name: str, t: int, v: int, targets, weights, grad_dtype) -> tuple:
    """Checks a loss kernel's per-row inputs and returns its results' shapes and dtypes (d [t, v] in
    grad_dtype, loss [t], lse [t]); ValueError naming `name` and the bad value otherwise."""
    if targets.shape != (t,) or weights.shape != (t,):
        raise ValueError(f"{name} needs targets and weights of shape ({t},); got {targets.shape}, {weights.shape}")
    if v == 0:
        raise ValueError(f"{name} needs at least one logit per row")
    grad_dtype = jnp.dtype(grad_dtype)
    if grad_dtype not in (jnp.float32, jnp.bfloat16):
        raise ValueError(f"{name} writes its gradient as float32 or bfloat16; got {grad_dtype}")
    return (jax.ShapeDtypeStruct((t, v), grad_dtype), jax.ShapeDtypeStruct((t,), jnp.float32),
            jax.ShapeDtypeStruct((t,), jnp.float32))


def xent(logits: jax.Array, targets: jax.Array, weights: jax.Array, *, z_loss: float = 0.0,
         grad_dtype=jnp.float32) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Returns (d [T, V] in grad_dtype, loss [T] fp32, lse [T] fp32) for fp32 logits [T, V] (module
    docstring). Targets outside [0, V) are clamped. Raises ValueError on other shapes or dtypes."""
    if logits.ndim != 2 or logits.dtype != jnp.float32:
        raise ValueError(f"xent takes float32 logits [tokens, vocab]; got {logits.dtype} {logits.shape}")
    t, v = logits.shape
    out = loss_outputs("xent", t, v, targets, weights, grad_dtype)
    if not available():
        raise RuntimeError(f"the CPU cross-entropy kernel is unavailable: {unavailable_reason()}")
    return jax.ffi.ffi_call(_TARGET, out, vmap_method="sequential")(
        logits, targets.astype(jnp.int32), weights.astype(jnp.float32), z_loss=np.float32(z_loss))
