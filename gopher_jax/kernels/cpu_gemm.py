"""A blocked CPU GEMM (cpu_gemm.cc) called through the XLA FFI: fp32 or bf16 operands, fp32 sums.

`gemm(a, b, trans_a=, trans_b=, out_dtype=)` returns op(a) @ op(b) summed in float32 and stored in
`out_dtype` (float32, or bfloat16 rounded once at the end), where op transposes while the kernel
packs its operands (no transpose in memory). bf16 operands run on AMX tiles where the CPU has
AMX-BF16 and the OS grants the process tile state (`uses_amx()`; GOPHER_JAX_AMX=0 turns AMX off,
kernels/amx.h), else on the AVX512-BF16 dot-product instructions when the CPU has them
(`has_bf16_dot()`), otherwise they are widened to fp32 while packing (`bf16_unit()` names which). The library is built with g++ on first use and cached per host
(kernels/build.py); GOPHER_JAX_DISABLE_CPU_GEMM=1 turns it off. Threads per call:
GOPHER_JAX_GEMM_THREADS (default: all hardware threads).

Whether it is used is decided per host and per GEMM shape by a measured probe
(kernels/matmul_impl.py): XLA's own dot is the alternative and the fallback.

For kernel work, GOPHER_JAX_CPU_GEMM_SOURCE=/path/to/variant.cc makes the steps traced while it is
set call a library built from that source instead (registered under its own FFI target, so both
can run in one process): `benchmarks/train_throughput.py --paired_env
GOPHER_JAX_CPU_GEMM_SOURCE=/path/variant.cc` times a kernel change against this one step by step.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from gopher_jax.kernels.ffi_library import FfiLibrary

__all__ = ["available", "unavailable_reason", "has_bf16_dot", "uses_amx", "bf16_unit", "gemm"]

SOURCE = Path(__file__).with_name("cpu_gemm.cc")  # the kernel source (matmul_impl keys its caches by it)
_TARGET = "gopher_cpu_gemm_v2"
SOURCE_ENV = "GOPHER_JAX_CPU_GEMM_SOURCE"  # A/B a variant source (module docstring)
_LIBRARY = FfiLibrary(SOURCE, "gopher_cpu_gemm", {_TARGET: "GopherGemm"}, "GOPHER_JAX_DISABLE_CPU_GEMM")
_variants_lock = threading.Lock()
_variants: dict = {}  # variant source path -> its FFI target name


def _target() -> str:
    """The FFI target a call traced now uses: this module's kernel, or SOURCE_ENV's variant (built
    and registered on first use; a build error is raised, not hidden, since someone asked for it)."""
    source = os.environ.get(SOURCE_ENV, "")
    if not source:
        return _TARGET
    source = str(Path(source).resolve())
    with _variants_lock:
        if source not in _variants:
            name = f"gopher_cpu_gemm_variant_{len(_variants)}"
            variant = FfiLibrary(Path(source), "gopher_cpu_gemm", {name: "GopherGemm"}, disable_env="")
            if not variant.load():
                raise RuntimeError(f"{SOURCE_ENV}={source}: {variant.unavailable_reason()}")
            _variants[source] = name
        return _variants[source]


def available() -> bool:
    """True if the GEMM library is built and registered (builds it on the first call)."""
    return _LIBRARY.available()


def unavailable_reason() -> str:
    """Why `available()` is False ('' if it is True)."""
    return _LIBRARY.unavailable_reason()


def has_bf16_dot() -> bool:
    """True if bf16 operands run on the CPU's bf16 units (AVX512-BF16 instructions or AMX tiles)."""
    return _LIBRARY.flag("GopherGemmHasBf16Dot")


def uses_amx() -> bool:
    """True if bf16 operands run on AMX tiles (built for AMX-BF16, granted by the OS, GOPHER_JAX_AMX not 0)."""
    return _LIBRARY.flag("GopherGemmUsesAmx")


def bf16_unit() -> str:
    """Names what multiplies the kernel's bf16 operands here: "amx_bf16", "avx512_bf16",
    "fp32_widened" (no bf16 unit: pairs widened to fp32), or "unavailable" (no kernel)."""
    if not available():
        return "unavailable"
    if uses_amx():
        return "amx_bf16"
    return "avx512_bf16" if has_bf16_dot() else "fp32_widened"


def operand_shapes(a, b, trans_a: bool, trans_b: bool, out_dtype) -> tuple[int, int, int, jnp.dtype]:
    """Returns (M, K, N, out_dtype) of op(a) @ op(b) for the GEMM kernels (this one and mkl_gemm);
    raises ValueError on other ranks, dtypes or mismatched contracting sizes."""
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"gemm takes 2-D operands; got {a.shape} and {b.shape}")
    if a.dtype != b.dtype or a.dtype not in (jnp.float32, jnp.bfloat16):
        raise ValueError(f"gemm operands must both be float32 or both bfloat16; got {a.dtype}, {b.dtype}")
    m, k = (a.shape[1], a.shape[0]) if trans_a else a.shape
    kb, n = (b.shape[1], b.shape[0]) if trans_b else b.shape
    out_dtype = jnp.dtype(out_dtype)
    if out_dtype not in (jnp.float32, jnp.bfloat16):
        raise ValueError(f"gemm writes float32 or bfloat16; got {out_dtype}")
    if k != kb:
        raise ValueError(f"gemm contracting sizes differ: op(a) is [{m}, {k}], op(b) is [{kb}, {n}]")
    return m, k, n, out_dtype


def gemm(a: jax.Array, b: jax.Array, *, trans_a: bool = False, trans_b: bool = False,
         out_dtype=jnp.float32) -> jax.Array:
    """Returns op(a) @ op(b) for 2-D a, b of one dtype (float32 or bfloat16): fp32 sums, `out_dtype` result.

    op(a) is a [M, K] (or a.T for a [K, M] with trans_a); op(b) is b [K, N] (or b.T for b [N, K]
    with trans_b); out_dtype is float32 or bfloat16. Raises ValueError on other ranks, dtypes or
    mismatched contracting sizes.
    """
    m, k, n, out_dtype = operand_shapes(a, b, trans_a, trans_b, out_dtype)
    if 0 in (m, k, n):  # nothing to multiply (the kernel's work split assumes M, N > 0)
        return jnp.zeros((m, n), out_dtype)
    if not available():
        raise RuntimeError(f"the CPU GEMM kernel is unavailable: {unavailable_reason()}")
    return jax.ffi.ffi_call(_target(), jax.ShapeDtypeStruct((m, n), out_dtype),
                            vmap_method="sequential")(a, b, trans_a=np.int64(trans_a),
                                                      trans_b=np.int64(trans_b))
