"""Fused CPU attention kernel vs the pure-jnp (XLA) reference, same process, interleaved runs.

    JAX_PLATFORMS=cpu python benchmarks/attention_kernel.py [--reps 7] [--out result.json]

Default shape is gopher_44m's attention: B=8, T=512, H=16 heads x D=32, with and without the
Transformer-XL relative term. Each rep times reference and kernel back to back (fwd, then
fwd+bwd = jit(value_and_grad)), so both see the same machine load. Prints JSON: medians of wall
ms and of process CPU ms (all threads), and reference/kernel ratios of each.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from gopher_jax.kernels import cpu_attention as ca  # noqa: E402


def make_inputs(b, t, h, kh, d, rel, seed=0):
    r = np.random.RandomState(seed)
    f = lambda *s: jnp.asarray(r.randn(*s), jnp.float32)  # noqa: E731
    args = [f(b, t, h, d), f(b, t, kh, d), f(b, t, kh, d)]
    if rel:
        args += [f(b, t, h, d), f(t, h, d)]
    seg = jnp.ones((b, t), jnp.int32)
    return args, seg, f(b, t, h, d)


def build(fn, seg, dout, scale, rel):
    def out(*a):
        kw = dict(q_pos=a[3], rel_keys=a[4]) if rel else {}
        return fn(a[0], a[1], a[2], seg, scale=scale, **kw)

    def loss(*a):
        return jnp.sum(out(*a) * dout)

    fwd = jax.jit(out)
    fwd_bwd = jax.jit(jax.value_and_grad(loss, argnums=tuple(range(5 if rel else 3))))
    return fwd, fwd_bwd


def timed(f, args):
    """(wall ms, process CPU ms summed over all threads): CPU time is the steadier measure of
    work on a shared machine, wall time is what a training step sees."""
    c0, t0 = time.process_time(), time.perf_counter()
    jax.block_until_ready(f(*args))
    return (time.perf_counter() - t0) * 1e3, (time.process_time() - c0) * 1e3


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--length", type=int, default=512)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--kv-heads", type=int, default=None)
    p.add_argument("--head-dim", type=int, default=32)
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    if not ca.available():
        raise SystemExit(f"kernel unavailable: {ca.unavailable_reason()}")
    kh = a.kv_heads or a.heads
    scale = 1.0 / float(np.sqrt(a.head_dim))
    result = {"shape": dict(B=a.batch, T=a.length, H=a.heads, K=kh, D=a.head_dim),
              "reps": a.reps, "threads": os.environ.get("GOPHER_JAX_ATTN_THREADS", "all"),
              "cpu_count": os.cpu_count(), "results": {}}
    for rel in (False, True):
        args, seg, dout = make_inputs(a.batch, a.length, a.heads, kh, a.head_dim, rel)
        fns = {name: build(fn, seg, dout, scale, rel) for name, fn in
               (("reference", ca.reference_causal_attention),
                ("kernel", ca.fused_causal_attention))}
        # correctness at the benchmark shape
        o_ref, o_ker = fns["reference"][0](*args), fns["kernel"][0](*args)
        g_ref, g_ker = fns["reference"][1](*args)[1], fns["kernel"][1](*args)[1]
        max_out = float(jnp.max(jnp.abs(o_ref - o_ker)))
        max_grad = max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(g_ref, g_ker))
        times = {(n, m): [] for n in fns for m in ("fwd", "fwd_bwd")}
        cpu = {(n, m): [] for n in fns for m in ("fwd", "fwd_bwd")}
        for _ in range(a.reps):  # interleaved: every rep times all four
            for m, i in (("fwd", 0), ("fwd_bwd", 1)):
                for n in fns:
                    wall, c = timed(fns[n][i], args)
                    times[(n, m)].append(wall)
                    cpu[(n, m)].append(c)
        med = {f"{n}_{m}_ms": round(statistics.median(v), 2) for (n, m), v in times.items()}
        med.update({f"{n}_{m}_cpu_ms": round(statistics.median(v), 2) for (n, m), v in cpu.items()})
        med["fwd_speedup"] = round(med["reference_fwd_ms"] / med["kernel_fwd_ms"], 2)
        med["fwd_bwd_speedup"] = round(med["reference_fwd_bwd_ms"] / med["kernel_fwd_bwd_ms"], 2)
        med["fwd_cpu_ratio"] = round(med["reference_fwd_cpu_ms"] / med["kernel_fwd_cpu_ms"], 2)
        med["fwd_bwd_cpu_ratio"] = round(med["reference_fwd_bwd_cpu_ms"] / med["kernel_fwd_bwd_cpu_ms"], 2)
        med["max_abs_diff_out"] = max_out
        med["max_abs_diff_grads"] = max_grad
        result["results"]["relative" if rel else "plain"] = med
        print(json.dumps({"relative" if rel else "plain": med}), flush=True)
    print(json.dumps(result, indent=2))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
