"""Fused causal attention for CPU: a flash-attention style C++ kernel called through the XLA FFI.

`fused_causal_attention` computes, per batch row b and query head h (kv head h // (H // K)),

    score_ij = scale * (q_i . k_j + q_pos_i . rel_keys[i - j]) - slope_h * (i - j)
    allowed  = j <= i and segment_ids[b, i] == segment_ids[b, j]
    out_i    = sum_j softmax_j(score_i | allowed) v_j

(the relative and ALiBi terms only when given) without materialising [B, H, T, T]: the C++
kernel (cpu_attention.cc) walks 64x64 tiles with an online softmax, skips tiles with no allowed
pair, and has a fused flash-attention-2 backward (recomputes scores from the saved per-row
logsumexp). It has a `jax.custom_vjp`, so it works under jit, grad, scan and checkpoint.

The shared library is built lazily on first use with g++ into
~/.cache/gopher_jax/kernels/<hash>/ (GOPHER_JAX_KERNEL_CACHE overrides the root), under a file
lock. If that fails (no compiler, no FFI headers) or GOPHER_JAX_DISABLE_FUSED_ATTENTION=1,
`available()` is False, `unavailable_reason()` says why, and `fused_causal_attention` falls back
to `reference_causal_attention` (pure jnp, same maths, materialises the scores).

Precision: bfloat16 q runs the kernel's bf16 path (`kernel_dtype`): q, k, v, q_pos, out and their
gradients stay bf16 in memory, every tile GEMM multiplies bf16 pairs with fp32 sums (VDPBF16PS on
CPUs with AVX512-BF16, `has_bf16_dot()`; elsewhere the same products widened to fp32), and the
softmax, logsumexp, rel_keys and its gradient are fp32. Any other dtype runs in float32 and is
cast back to q's dtype. GOPHER_JAX_ATTN_BF16=0 sends bf16 inputs through the float32 path.
Threads: GOPHER_JAX_ATTN_THREADS (default: all hardware threads) per call.

Sharding: with more than one device the FFI calls are wrapped in custom_partitioning so a
batch-sharded input runs on each device's own rows (other dimensions are replicated; see
`_batch_partitioned`). GOPHER_JAX_ATTN_PARTITION=0/1 forces that off/on.

Design, measurements and limits: docs/decisions/0003-cpu-fused-attention.md.
"""
from __future__ import annotations

import functools
import os
import shlex
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from gopher_jax.kernels.ffi_library import FfiLibrary
from gopher_jax.model.positions import relative_shift

__all__ = [
    "available",
    "unavailable_reason",
    "fused_causal_attention",
    "reference_causal_attention",
    "library_path",
    "has_bf16_dot",
    "uses_amx",
    "kernel_dtype",
]

_SOURCE = Path(__file__).with_name("cpu_attention.cc")
# Compiler flags (NaN/Inf kept for the spike guard): kernels/build.py BASE_FLAGS; measured cost of
# -fno-finite-math-only: none beyond noise (docs/reliability.md, "NaN and Inf").
_FWD_TARGET = "gopher_cpu_fused_attention_fwd_v2"
_BWD_TARGET = "gopher_cpu_fused_attention_bwd_v2"
_NEG_INF = -1e30

# ----------------------------------------------------------------------------------------------
# Build and registration
# ----------------------------------------------------------------------------------------------

def _extra_flags() -> tuple[str, ...]:
    """GOPHER_JAX_KERNEL_CXXFLAGS, appended to the build flags (e.g. -DGJ_BQ=32 -DGJ_BK=128 to try
    other tile sizes). They are part of the cache key."""
    return tuple(shlex.split(os.environ.get("GOPHER_JAX_KERNEL_CXXFLAGS", "")))


_LIBRARY = FfiLibrary(_SOURCE, "gopher_cpu_attention", {_FWD_TARGET: "GopherAttnFwd", _BWD_TARGET: "GopherAttnBwd"},
                      "GOPHER_JAX_DISABLE_FUSED_ATTENTION", _extra_flags)


def available() -> bool:
    """True if the C++ kernel is built and registered (builds it on the first call)."""
    return _LIBRARY.available()


def unavailable_reason() -> str:
    """Why `available()` is False ('' if it is True)."""
    return _LIBRARY.unavailable_reason()


def library_path() -> str | None:
    """Path of the built kernel library (None if unavailable)."""
    return _LIBRARY.path()


def has_bf16_dot() -> bool:
    """True if the bf16 path multiplies on the CPU's bf16 dot-product units (AVX512-BF16 or AMX)."""
    return _LIBRARY.flag("GopherAttnHasBf16Dot")


def uses_amx() -> bool:
    """True if the bf16 path's tile GEMMs run on AMX tiles (kernels/amx.h; GOPHER_JAX_AMX=0: no)."""
    return _LIBRARY.flag("GopherAttnUsesAmx")


def kernel_dtype(dtype) -> jnp.dtype:
    """The dtype the kernel runs for inputs of `dtype`: bfloat16 for bfloat16 (unless
    GOPHER_JAX_ATTN_BF16=0), else float32."""
    if jnp.dtype(dtype) == jnp.bfloat16 and os.environ.get("GOPHER_JAX_ATTN_BF16", "1") not in ("", "0"):
        return jnp.dtype(jnp.bfloat16)
    return jnp.dtype(jnp.float32)


# ----------------------------------------------------------------------------------------------
# Reference (pure jnp)
# ----------------------------------------------------------------------------------------------

def _check(q, k, v, segment_ids, q_pos, rel_keys, alibi_slopes):
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError(f"q, k, v must be [B, T, heads, D]; got {q.shape}, {k.shape}, {v.shape}")
    b, t, h, d = q.shape
    if k.shape != v.shape or k.shape[:2] != (b, t) or k.shape[3] != d:
        raise ValueError(f"k {k.shape} / v {v.shape} do not match q {q.shape}")
    if h % k.shape[2]:
        raise ValueError(f"num_heads {h} is not a multiple of kv_heads {k.shape[2]}")
    if segment_ids.shape != (b, t):
        raise ValueError(f"segment_ids {segment_ids.shape} must be {(b, t)}")
    if (q_pos is None) != (rel_keys is None):
        raise ValueError("q_pos and rel_keys go together")
    if q_pos is not None and (q_pos.shape != q.shape or rel_keys.shape != (t, h, d)):
        raise ValueError(f"q_pos {q_pos.shape} must be {q.shape}, rel_keys {rel_keys.shape} "
                         f"must be {(t, h, d)}")
    if alibi_slopes is not None and alibi_slopes.shape != (h,):
        raise ValueError(f"alibi_slopes {alibi_slopes.shape} must be {(h,)}")


def reference_causal_attention(q, k, v, segment_ids, *, scale, q_pos=None, rel_keys=None,
                               alibi_slopes=None):
    """Pure-jnp version of `fused_causal_attention` (materialises the [B, H, T, T] scores)."""
    _check(q, k, v, segment_ids, q_pos, rel_keys, alibi_slopes)
    b, t, h, d = q.shape
    kh = k.shape[2]
    g = h // kh
    f32 = jnp.float32
    hi = jax.lax.Precision.HIGHEST
    qg = q.astype(f32).reshape(b, t, kh, g, d)
    scores = jnp.einsum("btkgd,bskd->bkgts", qg, k.astype(f32), precision=hi)
    if q_pos is not None:
        # by_distance[..., i, c] = q_pos_i . rel_keys[T-1-c]; relative_shift turns it into [i, j].
        rk = rel_keys.astype(f32)[::-1].reshape(t, kh, g, d)
        by_distance = jnp.einsum("btkgd,rkgd->bkgtr", q_pos.astype(f32).reshape(b, t, kh, g, d),
                                 rk, precision=hi)
        scores = scores + relative_shift(by_distance)
    scores = scores * f32(scale)
    distance = (jnp.arange(t)[:, None] - jnp.arange(t)[None, :]).astype(f32)
    if alibi_slopes is not None:
        slopes = alibi_slopes.astype(f32).reshape(kh, g)
        scores = scores - slopes[None, :, :, None, None] * distance
    causal = distance >= 0
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    mask = (causal[None] & same)[:, None, None]
    scores = jnp.where(mask, scores, _NEG_INF)
    probs = jax.nn.softmax(scores, axis=-1)
    out = jnp.einsum("bkgts,bskd->btkgd", probs, v.astype(f32), precision=hi)
    return out.reshape(b, t, h, d).astype(q.dtype)


# ----------------------------------------------------------------------------------------------
# Kernel + custom_vjp
# ----------------------------------------------------------------------------------------------

def _dummy(dtype=jnp.float32):
    return jnp.zeros((1,), dtype)


def _fwd_call(q, k, v, seg, qp, rk, slopes, *, scale, has_rel, has_alibi):
    b, t, h, d = q.shape
    return jax.ffi.ffi_call(
        _FWD_TARGET,
        (jax.ShapeDtypeStruct((b, t, h, d), q.dtype),
         jax.ShapeDtypeStruct((b, h, t), jnp.float32)),
        vmap_method="sequential",
    )(q, k, v, seg, qp, rk, slopes, scale=np.float32(scale), has_rel=np.int64(has_rel),
      has_alibi=np.int64(has_alibi))


def _bwd_call(q, k, v, seg, qp, rk, slopes, out, lse, dout, *, scale, has_rel, has_alibi,
              rel_per_batch=False):
    """Returns dq, dk, dv, dq_pos (in q's dtype), d rel_keys (fp32): [T, H, D], or with
    rel_per_batch [B, T, H, D] (one term per batch row, for the caller to sum: keeps every result
    batch-partitionable)."""
    f32, dt = jnp.float32, q.dtype
    drel_shape = (q.shape if rel_per_batch else rk.shape) if has_rel else (1,)
    shapes = (jax.ShapeDtypeStruct(q.shape, dt), jax.ShapeDtypeStruct(k.shape, dt),
              jax.ShapeDtypeStruct(v.shape, dt), jax.ShapeDtypeStruct(qp.shape, dt),
              jax.ShapeDtypeStruct(drel_shape, f32))
    return jax.ffi.ffi_call(_BWD_TARGET, shapes, vmap_method="sequential")(
        q, k, v, seg, qp, rk, slopes, out, lse, dout, scale=np.float32(scale),
        has_rel=np.int64(has_rel), has_alibi=np.int64(has_alibi))


# -- Batch partitioning under jit with sharded inputs ------------------------------------------
# A custom call has no sharding rule, so GSPMD/Shardy would all-gather its inputs and run the
# whole batch on every device. Every operand and result (except rel_keys and the ALiBi slopes,
# which are replicated, and d rel_keys, which the backward returns per batch row for the caller to
# sum) has batch as its leading dimension and batch rows are independent, so the calls are wrapped
# in custom_partitioning: the batch dimension keeps its sharding, every other dimension is
# replicated, and each device runs the kernel on its own rows.

def _batch_partitioned(impl, batched_args, batched_results, rule, static):
    from jax.experimental.custom_partitioning import custom_partitioning
    from jax.sharding import NamedSharding, PartitionSpec

    def shardings(mesh, arg_shapes):
        sh = arg_shapes[0].sharding
        spec = getattr(sh, "spec", None)
        batch_axes = spec[0] if spec is not None and len(spec) else None

        def one(ndim, batched):
            return NamedSharding(mesh, PartitionSpec(batch_axes if batched else None,
                                                     *([None] * (ndim - 1))))

        args = tuple(one(len(x.shape), bt) for x, bt in zip(arg_shapes, batched_args))
        return args, batch_axes, one

    def partition(mesh, arg_shapes, result_shape):
        args, _, one = shardings(mesh, arg_shapes)
        results = tuple(one(len(r.shape), bt) for r, bt in zip(result_shape, batched_results))
        return mesh, functools.partial(impl, **static), results, args

    def infer(mesh, arg_shapes, result_shape):
        _, _, one = shardings(mesh, arg_shapes)
        return tuple(one(len(r.shape), bt) for r, bt in zip(result_shape, batched_results))

    @custom_partitioning
    def call(*args):
        return impl(*args, **static)

    call.def_partition(partition=partition, infer_sharding_from_operands=infer,
                       sharding_rule=rule, need_replication_factors=("t", "h", "d", "k"))  # first-use order
    return call


def _make_calls(scale: float, has_rel: bool, has_alibi: bool, partitioned: bool):
    static = dict(scale=scale, has_rel=has_rel, has_alibi=has_alibi)
    if not partitioned:
        return (functools.partial(_fwd_call, **static), functools.partial(_bwd_call, **static))
    qp = "b t h d" if has_rel else "x1"
    rk = "t h d" if has_rel else "x2"
    sl = "h" if has_alibi else "x3"
    ins = f"b t h d, b t k d, b t k d, b t, {qp}, {rk}, {sl}"
    batched_ins = (True, True, True, True, has_rel, False, False)
    fwd = _batch_partitioned(_fwd_call, batched_ins, (True, True),
                             f"{ins} -> b t h d, b h t", static)
    drk = "b t h d" if has_rel else "x4"
    dqp = "b t h d" if has_rel else "x5"
    bwd = _batch_partitioned(
        _bwd_call, batched_ins + (True, True, True), (True, True, True, has_rel, has_rel),
        f"{ins}, b t h d, b h t, b t h d -> b t h d, b t k d, b t k d, {dqp}, {drk}",
        dict(static, rel_per_batch=True))
    return fwd, bwd


def _make(scale: float, has_rel: bool, has_alibi: bool, partitioned: bool):
    fwd_call, bwd_call = _make_calls(scale, has_rel, has_alibi, partitioned)

    @jax.custom_vjp
    def attn(q, k, v, seg, qp, rk, slopes):
        return fwd_call(q, k, v, seg, qp, rk, slopes)[0]

    def fwd(q, k, v, seg, qp, rk, slopes):
        out, lse = fwd_call(q, k, v, seg, qp, rk, slopes)
        return out, (q, k, v, seg, qp, rk, slopes, out, lse)

    def bwd(res, dout):
        q, k, v, seg, qp, rk, slopes, out, lse = res
        dq, dk, dv, dqp, drk = bwd_call(q, k, v, seg, qp, rk, slopes, out, lse,
                                        dout.astype(q.dtype))
        if not has_rel:
            drk = jnp.zeros_like(rk)
        elif drk.ndim == 4:  # per batch row (partitioned call)
            drk = jnp.sum(drk, axis=0)
        return dq, dk, dv, None, dqp, drk, jnp.zeros_like(slopes)

    attn.defvjp(fwd, bwd)
    return attn


_cache: dict = {}


def _partitioning_enabled() -> bool:
    """GOPHER_JAX_ATTN_PARTITION=1/0 forces batch partitioning on/off; by default it is on when
    there is more than one device (on one device it would only add the sum over b of d rel_keys)."""
    env = os.environ.get("GOPHER_JAX_ATTN_PARTITION", "auto")
    if env == "auto":
        return jax.device_count() > 1
    return env not in ("", "0")


def _kernel(scale: float, has_rel: bool, has_alibi: bool):
    key = (float(scale), bool(has_rel), bool(has_alibi), _partitioning_enabled())
    if key not in _cache:
        _cache[key] = _make(*key)
    return _cache[key]


def fused_causal_attention(q, k, v, segment_ids, *, scale, q_pos=None, rel_keys=None,
                           alibi_slopes=None):
    """Causal (segment-masked) attention with a fused CPU kernel; see the module docstring.

    q: [B, T, H, D]; k, v: [B, T, K, D] with H % K == 0; segment_ids: [B, T] int;
    scale: Python float (static); q_pos: [B, T, H, D] and rel_keys: [T, H, D] (row r = distance
    i - j = r), both or neither; alibi_slopes: [H]. Returns [B, T, H, D] in q's dtype (bfloat16
    q runs the bf16 path, see the module docstring; k, v and q_pos are cast to its dtype).
    Gradients flow to q, k, v, q_pos and rel_keys (none to segment_ids or alibi_slopes).
    Falls back to `reference_causal_attention` when `available()` is False.
    """
    _check(q, k, v, segment_ids, q_pos, rel_keys, alibi_slopes)
    if not available():
        return reference_causal_attention(q, k, v, segment_ids, scale=scale, q_pos=q_pos,
                                          rel_keys=rel_keys, alibi_slopes=alibi_slopes)
    f32, dt = jnp.float32, kernel_dtype(q.dtype)
    has_rel = q_pos is not None
    has_alibi = alibi_slopes is not None
    qp = q_pos.astype(dt) if has_rel else _dummy(dt)
    rk = rel_keys.astype(f32) if has_rel else _dummy()
    slopes = jax.lax.stop_gradient(alibi_slopes.astype(f32)) if has_alibi else _dummy()
    out = _kernel(scale, has_rel, has_alibi)(
        q.astype(dt), k.astype(dt), v.astype(dt), segment_ids.astype(jnp.int32), qp, rk, slopes)
    return out.astype(q.dtype)
