"""The CPU GEMM kernel (gopher_jax/kernels/cpu_gemm.cc) on the 12 GEMM shapes of the gopher_44m bf16
train step (seq 512 x batch 8 = 4,096 tokens), A/B against variant sources in one process.

    python benchmarks/cpu_gemm_shapes.py --variant /tmp/old/cpu_gemm.cc --reps 9 \
        --json benchmarks/results/cpu_gemm_shapes.json

Each shape is one call as the step makes it (operand layouts, trans flags and output dtype of the
forward, dx and dW GEMMs of the Dense layers and of the tied output head). Sources are timed
alternately, shape by shape and repetition by repetition, so they see the same load; the JSON has
every time, the median GFLOP/s per shape and source, and `step_gemm_s`: each source's median call
times weighted by how often the step makes the call (its GEMM seconds per step, outside the step).
The product's source is `product`; a `--variant` is built and registered under its own FFI target
(GOPHER_JAX_CPU_GEMM_SOURCE), so an edited copy of cpu_gemm.cc (with simd_math.h, amx.h and gemm_ffi.h beside it) or the
previous commit's source (`git show HEAD~1:gopher_jax/kernels/cpu_gemm.cc`) can be compared to it; a
copy of the product's own source as a variant shows the harness's noise.
Outputs are freshly allocated per call, as in the step (each shape's timed calls follow one untimed
call of it, and the sources' order turns each repetition); run under `GLIBC_TUNABLES=glibc.malloc.hugetlb=1`
(what `gopher-jax` and train_throughput.py set) or the 524 MB head output's page faults dominate.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # host_info

TOKENS, D_MODEL, D_FF, VOCAB = 4096, 512, 2048, 32000
LAYERS = 8
# name: (a shape, b shape, trans_a, trans_b, output dtype, calls per step)
SHAPES = {
    "head_fwd": ((TOKENS, D_MODEL), (VOCAB, D_MODEL), 0, 1, "float32", 1),
    "head_dx": ((TOKENS, VOCAB), (VOCAB, D_MODEL), 0, 0, "float32", 1),
    "head_dw": ((TOKENS, VOCAB), (TOKENS, D_MODEL), 1, 0, "float32", 1),
    "attn_proj_fwd": ((TOKENS, D_MODEL), (D_MODEL, D_MODEL), 0, 0, "bfloat16", 4 * LAYERS),
    "attn_proj_dx": ((TOKENS, D_MODEL), (D_MODEL, D_MODEL), 0, 1, "bfloat16", 4 * LAYERS),
    "attn_proj_dw": ((TOKENS, D_MODEL), (TOKENS, D_MODEL), 1, 0, "float32", 4 * LAYERS),
    "mlp_in_fwd": ((TOKENS, D_MODEL), (D_MODEL, D_FF), 0, 0, "bfloat16", LAYERS),
    "mlp_in_dx": ((TOKENS, D_FF), (D_MODEL, D_FF), 0, 1, "bfloat16", LAYERS),
    "mlp_in_dw": ((TOKENS, D_MODEL), (TOKENS, D_FF), 1, 0, "float32", LAYERS),
    "mlp_out_fwd": ((TOKENS, D_FF), (D_FF, D_MODEL), 0, 0, "bfloat16", LAYERS),
    "mlp_out_dx": ((TOKENS, D_MODEL), (D_FF, D_MODEL), 0, 1, "bfloat16", LAYERS),
    "mlp_out_dw": ((TOKENS, D_FF), (TOKENS, D_MODEL), 1, 0, "float32", LAYERS),
}


def flops(a_shape, b_shape, trans_a, trans_b) -> int:
    """2 M N K of op(a) @ op(b)."""
    m, k = (a_shape[1], a_shape[0]) if trans_a else a_shape
    n = b_shape[0] if trans_b else b_shape[1]
    return 2 * m * n * k


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", action="append", default=[], help="a cpu_gemm.cc variant to time beside the product's")
    p.add_argument("--reps", type=int, default=7, help="timed calls per shape and source (after one warm-up)")
    p.add_argument("--only", default="", help="comma-separated shape names (default: all 12)")
    p.add_argument("--json", default="", help="write the results here")
    return p.parse_args(argv)


def run(args) -> dict:
    import jax
    import jax.numpy as jnp

    from gopher_jax.kernels import cpu_gemm
    from host_info import host_info

    if not cpu_gemm.available():
        raise SystemExit(f"the CPU GEMM kernel is unavailable: {cpu_gemm.unavailable_reason()}")
    names = [n for n in (args.only.split(",") if args.only else SHAPES) if n]
    unknown = [n for n in names if n not in SHAPES]
    if unknown:
        raise SystemExit(f"--only: unknown shapes {unknown}; choose from {sorted(SHAPES)}")
    sources = ["product", *args.variant]
    calls, key = {}, jax.random.PRNGKey(0)
    for name in names:
        a_shape, b_shape, ta, tb, out, _ = SHAPES[name]
        a = jax.random.normal(key, a_shape, jnp.float32).astype(jnp.bfloat16)
        b = jax.random.normal(jax.random.fold_in(key, 1), b_shape, jnp.float32).astype(jnp.bfloat16)
        for source in sources:
            if source == "product":
                os.environ.pop(cpu_gemm.SOURCE_ENV, None)
            else:
                os.environ[cpu_gemm.SOURCE_ENV] = source  # read while tracing
            fn = jax.jit(lambda x, y, ta=ta, tb=tb, out=out: cpu_gemm.gemm(
                x, y, trans_a=bool(ta), trans_b=bool(tb), out_dtype=out)).lower(a, b).compile()
            fn(a, b).block_until_ready()
            calls[name, source] = (fn, a, b)
    os.environ.pop(cpu_gemm.SOURCE_ENV, None)
    times = {k: [] for k in calls}
    for rep in range(args.reps):
        # The order of the sources turns by one each repetition: the first call after another
        # shape's maps its output afresh (the head's 524 MB: huge-page faults and compaction), and
        # even after an untimed call the first timed one measured ~5% slow; turning gives every
        # source every position equally often.
        order = sources[rep % len(sources):] + sources[:rep % len(sources)]
        for name in names:
            fn, a, b = calls[name, order[0]]
            fn(a, b).block_until_ready()  # untimed
            for source in order:
                fn, a, b = calls[name, source]
                t = time.perf_counter()
                fn(a, b).block_until_ready()
                times[name, source].append(time.perf_counter() - t)
    shapes, step = {}, {s: 0.0 for s in sources}
    for name in names:
        a_shape, b_shape, ta, tb, out, per_step = SHAPES[name]
        f = flops(a_shape, b_shape, ta, tb)
        row = {"a": list(a_shape), "b": list(b_shape), "trans_a": ta, "trans_b": tb, "out_dtype": out,
               "calls_per_step": per_step, "gflop": f / 1e9}
        for source in sources:
            med = statistics.median(times[name, source])
            row[f"gflops_{source}"] = f / med / 1e9
            row[f"times_s_{source}"] = times[name, source]
            step[source] += med * per_step
        shapes[name] = row
        print(f"{name:14s} " + "  ".join(f"{s}: {row[f'gflops_{s}']:6.1f}" for s in sources) + " GFLOP/s", flush=True)
    print("GEMM seconds per step (median calls x calls per step):", {s: round(v, 3) for s, v in step.items()})
    return {"host": host_info(), "sources": sources, "reps": args.reps,
            "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""), "shapes": shapes, "step_gemm_s": step}


def main(argv=None) -> int:
    args = parse_args(argv)
    result = run(args)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
