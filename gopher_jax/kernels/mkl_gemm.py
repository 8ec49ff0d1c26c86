"""The Dense layers' GEMM through Intel oneMKL (mkl_gemm.cc), called through the XLA FFI.

`gemm(a, b, trans_a=, trans_b=, out_dtype=)` computes what `cpu_gemm.gemm` computes (op(a) @ op(b),
fp32 or bf16 operands, fp32 sums, the result in float32 or bfloat16) with MKL's
cblas_gemm_bf16bf16f32 (AMX tiles or AVX512-BF16) and cblas_sgemm, split over
GOPHER_JAX_GEMM_THREADS threads with MKL itself sequential. On an Intel Xeon with AMX-BF16 it took the
gopher_44m bf16 step from 2.33 to 2.13 s (benchmarks/README.md, "GELU, RMSNorm and MKL").

MKL is an optional dependency (the `mkl` wheel, x86-64 Linux: `pip install 'gopher_jax[cpu]'`). It is
found as libmkl_rt.so in this environment's lib directory, or at GOPHER_JAX_MKL_LIBRARY (a system
MKL); the kernel library itself is built with g++ on first use and cached per host like the other
kernels, and loads MKL at run time. GOPHER_JAX_DISABLE_MKL=1 turns it off. Whether it is used is
decided per host and per GEMM shape by the measured probe of kernels/matmul_impl.py.

`head_xent(x, w, targets, weights, ...)` is the output head's GEMM and cpu_xent's loss rows in one
call, 128 token rows at a time, so the [tokens, vocab] fp32 logits are never whole
(ops/head_cross_entropy.py uses it when the head's GEMM is "mkl").
"""
from __future__ import annotations

import ctypes
import glob
import os
import sys
import threading
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from gopher_jax.kernels import cpu_gemm, cpu_xent
from gopher_jax.kernels.ffi_library import FfiLibrary

__all__ = ["available", "unavailable_reason", "library_path", "version", "gemm", "head_xent"]

SOURCE = Path(__file__).with_name("mkl_gemm.cc")
_TARGET = "gopher_mkl_gemm_v1"
_HEAD_XENT_TARGET = "gopher_mkl_head_xent_v1"
LIBRARY_ENV = "GOPHER_JAX_MKL_LIBRARY"
DISABLE_ENV = "GOPHER_JAX_DISABLE_MKL"
_LIBRARY = FfiLibrary(SOURCE, "gopher_mkl_gemm", {_TARGET: "GopherMklGemm", _HEAD_XENT_TARGET: "GopherMklHeadXent"},
                      DISABLE_ENV)
_lock = threading.Lock()
_state: dict = {}


def library_path() -> str | None:
    """Returns the libmkl_rt to load: GOPHER_JAX_MKL_LIBRARY, else the newest libmkl_rt.so.* in this
    Python environment's lib directory (where the `mkl` wheel puts it), else None."""
    explicit = os.environ.get(LIBRARY_ENV, "")
    if explicit:
        return explicit
    for prefix in dict.fromkeys((sys.prefix, sys.base_prefix)):
        found = sorted(glob.glob(os.path.join(prefix, "lib", "libmkl_rt.so*")), key=lambda p: (len(p), p))
        if found:
            return found[-1]
    return None


def _load() -> bool:
    with _lock:
        if "ok" in _state:
            return _state["ok"]
        path = library_path()
        if os.environ.get(DISABLE_ENV, "") not in ("", "0"):
            reason = f"disabled by {DISABLE_ENV}"
        elif path is None:
            reason = (f"MKL is not installed (no libmkl_rt.so under {sys.prefix}/lib): "
                      f"pip install 'gopher_jax[cpu]' (x86-64 Linux), or set {LIBRARY_ENV}")
        elif not _LIBRARY.available():
            reason = _LIBRARY.unavailable_reason()
        else:
            lib = ctypes.CDLL(_LIBRARY.path())
            lib.GopherMklError.restype = lib.GopherMklVersion.restype = ctypes.c_char_p
            if lib.GopherMklLoad(path.encode()):
                _state.update(ok=True, reason="", version=lib.GopherMklVersion().decode(errors="replace"))
                return True
            reason = lib.GopherMklError().decode(errors="replace")
        _state.update(ok=False, reason=reason, version="")
        return False


def available() -> bool:
    """True if MKL was found and loaded and the kernel library is built (both on the first call)."""
    return _load()


def unavailable_reason() -> str:
    """Why `available()` is False ('' if it is True)."""
    _load()
    return _state["reason"]


def version() -> str:
    """MKL's own version string ('' if unavailable)."""
    _load()
    return _state["version"]


def gemm(a: jax.Array, b: jax.Array, *, trans_a: bool = False, trans_b: bool = False,
         out_dtype=jnp.float32) -> jax.Array:
    """Returns op(a) @ op(b) for 2-D a, b of one dtype (float32 or bfloat16): fp32 sums, `out_dtype`
    result (float32 or bfloat16), op as in `cpu_gemm.gemm`. Raises ValueError on other ranks,
    dtypes or mismatched contracting sizes, RuntimeError if MKL is unavailable."""
    m, k, n, out_dtype = cpu_gemm.operand_shapes(a, b, trans_a, trans_b, out_dtype)
    if 0 in (m, k, n):
        return jnp.zeros((m, n), out_dtype)
    if not available():
        raise RuntimeError(f"the MKL GEMM is unavailable: {unavailable_reason()}")
    return jax.ffi.ffi_call(_TARGET, jax.ShapeDtypeStruct((m, n), out_dtype),
                            vmap_method="sequential")(a, b, trans_a=np.int64(trans_a),
                                                      trans_b=np.int64(trans_b))


def head_xent(x: jax.Array, w: jax.Array, targets: jax.Array, weights: jax.Array, *, trans_w: bool,
              z_loss: float = 0.0, grad_dtype=jnp.float32) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Returns what `cpu_xent.xent(x @ op(w) in fp32, targets, weights, ...)` returns, (d [T, V] in
    grad_dtype, loss [T] fp32, lse [T] fp32), without the fp32 logits ever existing whole: the
    kernel computes them 128 rows at a time into a per-thread scratch and runs the loss rows on
    them (mkl_gemm.cc, head_xent). x [T, D] and w ([V, D] with trans_w, else [D, V]) share one dtype,
    float32 or bfloat16. Raises ValueError on other shapes or dtypes, RuntimeError without MKL."""
    if x.ndim != 2 or w.ndim != 2 or x.dtype != w.dtype or x.dtype not in (jnp.float32, jnp.bfloat16):
        raise ValueError(f"head_xent takes 2-D x and w, both float32 or both bfloat16; got {x.dtype} {x.shape}, "
                         f"{w.dtype} {w.shape}")
    t, dm = x.shape
    v, dw = (w.shape if trans_w else w.shape[::-1])
    if dw != dm:
        raise ValueError(f"head_xent: x has d_model {dm} but w {'[V, D]' if trans_w else '[D, V]'} has {dw}")
    if dm == 0:
        raise ValueError(f"head_xent needs d_model > 0; got w {w.shape}")
    out = cpu_xent.loss_outputs("head_xent", t, v, targets, weights, grad_dtype)
    if not available():
        raise RuntimeError(f"the MKL GEMM is unavailable: {unavailable_reason()}")
    return jax.ffi.ffi_call(_HEAD_XENT_TARGET, out, vmap_method="sequential")(
        x, w, targets.astype(jnp.int32), weights.astype(jnp.float32), trans_w=np.int64(trans_w),
        z_loss=np.float32(z_loss))
