"""Which GEMM runs a Dense layer's matmuls (`ModelConfig.matmul_impl`), chosen per host by measurement.

Concrete implementations (`IMPLS`), all computing op(a) @ op(b) for 2-D operands:

* "xla": XLA's dot in the operand dtype (bf16 x bf16 -> bf16). What TPUs and GPUs compile well.
* "xla_f32acc": XLA's dot with fp32 accumulation (`preferred_element_type=float32`), rounded to
  the operand dtype afterwards. For fp32 operands it is "xla". On XLA:CPU (jax >= 0.10) a
  bf16 x bf16 -> fp32 dot runs on the bf16 dot-product units through XLA's YNNPACK fusion, while
  bf16 -> bf16 does not: measured 2.0-2.3x apart on an AMD EPYC (Zen 4, AVX512-BF16) host.
* "cpu_gemm": the FFI kernel of kernels/cpu_gemm.cc (bf16 on AMX tiles or AVX512-BF16, fp32 on
  AVX-512 FMA; fp32 sums; `cpu_gemm.bf16_unit()` says which unit, and every decision records it),
  which writes its result in the dtype asked for (bf16 rounded once, or fp32: the output head's
  logits and the weight gradients of fp32 master weights), so no separate rounding pass follows.
* "mkl": the same contract through Intel oneMKL (kernels/mkl_gemm.cc: cblas_gemm_bf16bf16f32 on
  AMX or AVX512-BF16, cblas_sgemm), where the optional `mkl` wheel is installed.

`ModelConfig.matmul_impl="auto"` resolves, per (dtype, GEMM shape), with `choose`: XLA ("xla")
off CPU, on multi-device meshes (a custom call has no sharding rule: XLA would gather its
operands onto every device) and for GEMMs under `MIN_PROBE_FLOPS`; on a one-device CPU it times
every candidate on that shape (forward, input gradient and weight gradient together, candidates
back to back in each of `_PROBE_REPS` rounds; wide shapes on fewer rows and capped widths) and
takes the best XLA variant ("xla" or "xla_f32acc", by median paired speed-up over "xla") unless a
kernel beats it by `_KERNEL_MARGIN` on that speed-up and on its best time; the kernels are tried in
the order of `KERNELS` ("mkl" first, then "cpu_gemm") and the first that beats XLA is picked, the other is
measured and reported. Results are cached per host (CPU features, jax version, kernel
sources and the unit its bf16 runs on: `kernel_identity`) in the kernel cache directory (`matmul_probe_<key>.json`; GOPHER_JAX_MATMUL_REPROBE=1
measures again; a cold probe of the tiny model's four fp32 shapes took 17 s at a load of 20 on 2
cores) and each decision is printed once per process with its numbers, so a run's start-up says
what it picked and why.
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import statistics
import sys
import threading
import time

import jax
import jax.numpy as jnp

from gopher_jax.atomic_write import atomic_write
from gopher_jax.kernels import build, cpu_gemm, mkl_gemm

IMPLS = ("xla", "xla_f32acc", "cpu_gemm", "mkl")
# The custom-call impls (one-device CPU only) and their modules, in the order `auto` tries them against
# XLA: the first that beats it is picked, the others are measured and reported only. MKL comes first: its
# pack-once shared operand pays more at a step's full rows than at the probe's cut ones, and probe noise
# once put cpu_gemm 7% ahead at bf16 4096x512x2048 (3.35 vs 3.13 x XLA) where the gopher_44m step ran
# slower with it: 2.31 s against 2.15-2.28 s with MKL (benchmarks/README.md, sixth session). cpu_gemm is
# the kernel of hosts without MKL.
KERNELS = {"mkl": mkl_gemm, "cpu_gemm": cpu_gemm}
CHOICES = ("auto",) + IMPLS  # ModelConfig.matmul_impl
_KERNEL_MARGIN = 1.05  # the kernel must be this much faster than XLA's best to replace it (timing noise)
_PROBE_FLOPS = 3e9  # per probed GEMM: rows are cut until 2*M*K*N fits (GFLOP/s is flat in M there) ...
_PROBE_MIN_ROWS = 256  # ... but never below this many (a few rows of a wide GEMM are unrepresentative)
_PROBE_MAX_K, _PROBE_MAX_N = 2048, 4096
# Below this (2*M*K*N of the forward) a GEMM takes well under a millisecond: "xla" without a
# probe, so unit-test-sized models (and their many shapes) pay no probing time.
MIN_PROBE_FLOPS = 1e8
# Names how a probe is timed and decided: a change to either must not reuse decisions made the old
# way (a cache written before the rounds rotated kept the fp32 head on the slower cpu_gemm). The cache
# key holds it with the margin and the kernels' order.
_DECISION_RULE = "rotated rounds; a kernel beats XLA on the paired median and on the best time"
_PROBE_REPS = 5  # timed rounds after a warm-up; candidates run back to back within a round

_lock = threading.Lock()
_decisions: dict[tuple, dict] = {}  # (dtype, m, k, n, transposed_b) -> decision record
_disk: dict | None = None


def dot(a, b, *, impl: str, trans_a: bool = False, trans_b: bool = False, out_dtype=None):
    """Returns op(a) @ op(b) for 2-D a, b with the GEMM `impl`, in `out_dtype` (default a's dtype;
    fp32 sums except "xla", whose result is rounded to a's dtype before any cast to out_dtype)."""
    out_dtype = jnp.dtype(out_dtype or a.dtype)
    if impl in KERNELS:  # writes fp32 or bf16 itself: no separate rounding pass
        gemm = KERNELS[impl].gemm
        if out_dtype in (jnp.float32, jnp.bfloat16):
            return gemm(a, b, trans_a=trans_a, trans_b=trans_b, out_dtype=out_dtype)
        return gemm(a, b, trans_a=trans_a, trans_b=trans_b).astype(out_dtype)
    lhs, rhs = (a.T if trans_a else a), (b.T if trans_b else b)
    if impl == "xla_f32acc":
        return jnp.dot(lhs, rhs, preferred_element_type=jnp.float32).astype(out_dtype)
    if impl == "xla":
        return jnp.dot(lhs, rhs).astype(out_dtype)
    raise ValueError(f"matmul impl {impl!r} is not one of {IMPLS}")


def on_single_cpu() -> tuple[bool, str]:
    """Whether a custom call can run here unsharded: a CPU platform and no multi-device mesh."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        platform = jax.default_backend()
        if platform != "cpu":
            return False, f"platform is {platform}"
        return True, ""
    # The mesh's own platform: an ahead-of-time compile for a TPU topology runs on a CPU host.
    device = getattr(mesh, "abstract_device", None)
    platform = getattr(device, "platform", None) or jax.default_backend()
    if platform != "cpu":
        return False, f"mesh platform is {platform}"
    if mesh.size != 1:
        return False, f"{mesh.size}-device mesh (a custom call cannot shard)"
    return True, ""


def check_explicit(impl: str) -> None:
    """Raises ValueError/RuntimeError if an explicitly requested `impl` cannot run here."""
    if impl not in KERNELS:
        return
    ok, why = on_single_cpu()
    if not ok:
        raise ValueError(f"ModelConfig.matmul_impl={impl!r} cannot run here ({why}); "
                         f"use matmul_impl='auto' or 'xla'")
    module = KERNELS[impl]
    if not module.available():
        raise RuntimeError(f"ModelConfig.matmul_impl={impl!r} but its GEMM is unavailable: "
                           f"{module.unavailable_reason()}; use matmul_impl='auto' or 'xla'")


def measured(m: int, k: int, n: int) -> bool:
    """Whether `auto` measures a GEMM of x [m, k] @ w [k, n] (2mkn >= MIN_PROBE_FLOPS); below it, "xla"."""
    return 2.0 * m * k * n >= MIN_PROBE_FLOPS


def choose(dtype, m: int, k: int, n: int, *, transposed_b: bool = False) -> str:
    """Returns the concrete impl `auto` uses for x [m, k] @ w ([k, n], or [n, k] with transposed_b)."""
    dtype = jnp.dtype(dtype)
    ok, _ = on_single_cpu()
    if not ok or not measured(m, k, n):
        return "xla"
    key = (dtype.name, int(m), int(k), int(n), bool(transposed_b))
    with _lock:
        if key not in _decisions:
            # Outside any trace: JAX's trace state is per thread, so the probe runs eagerly even when
            # `choose` is called while a train step is being traced.
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                _decisions[key] = pool.submit(_decide, *key).result()
        return _decisions[key]["impl"]


def decisions() -> list[dict]:
    """Returns every decision `auto` made in this process (shape, impl, measured GFLOP/s, reason)."""
    with _lock:
        return [dict(d) for d in _decisions.values()]


def candidates(dtype_name: str, *, with_kernels: bool = True) -> list[str]:
    """The impls that can run `dtype_name` operands: XLA's dot (and, for bf16, its fp32-summing
    variant) and, with `with_kernels` (a one-device CPU), each kernel that is available here."""
    impls = ["xla", "xla_f32acc"] if dtype_name == "bfloat16" else ["xla"]
    return impls + [name for name, module in KERNELS.items() if with_kernels and module.available()]


def kernel_identity() -> bytes:
    """The GEMM kernel's sources and the unit its bf16 runs on (AMX can be switched off per process):
    what a measurement of it depends on beyond the host (probe and peak caches are keyed by it)."""
    return b"\0".join((*build.source_texts(cpu_gemm.SOURCE), cpu_gemm.bf16_unit().encode(),
                        *build.source_texts(mkl_gemm.SOURCE), mkl_gemm.version().encode()))


def _disk_path():
    key = build.host_key(kernel_identity(), repr((_PROBE_FLOPS, _PROBE_MIN_ROWS, _PROBE_REPS, _KERNEL_MARGIN,
                                                  _DECISION_RULE, tuple(KERNELS))).encode())
    return build.cache_root() / f"matmul_probe_{key}.json"


def _load_disk() -> dict:
    global _disk
    if _disk is None:
        try:
            _disk = json.loads(_disk_path().read_text())
        except (OSError, ValueError):
            _disk = {}
    return _disk


def _reprobe() -> bool:
    """GOPHER_JAX_MATMUL_REPROBE=1: measure every shape this process uses again (other entries stay)."""
    return os.environ.get("GOPHER_JAX_MATMUL_REPROBE", "") not in ("", "0")


def _save_disk(entry_key: str, record: dict) -> None:
    disk = _load_disk()
    disk[entry_key] = record
    try:
        atomic_write(str(_disk_path()), lambda f: json.dump(disk, f, indent=1, sort_keys=True))
    except OSError:
        pass  # a read-only home: measure again next time


def _decide(dtype_name: str, m: int, k: int, n: int, transposed_b: bool) -> dict:
    entry_key = f"{dtype_name} {m}x{k}x{n} {'nt' if transposed_b else 'nn'}"
    record = None if _reprobe() else _load_disk().get(entry_key)
    cached = record is not None
    if record is None:
        rates, speedups, probed = _probe(jnp.dtype(dtype_name), m, k, n, transposed_b)
        best_xla = max((i for i in speedups if i not in KERNELS), key=speedups.get)
        # A kernel must win on both measures: the paired median ratio and the best time.
        impl = next((name for name in KERNELS if name in speedups
                     and speedups[name] > _KERNEL_MARGIN * speedups[best_xla] and rates[name] > rates[best_xla]),
                    best_xla)
        record = {"impl": impl, "gflops": {i: round(r / 1e9, 1) for i, r in rates.items()},
                  "speedup_over_xla": {i: round(v, 3) for i, v in speedups.items()}, "probe_shape": probed,
                  "cpu_gemm_unit": cpu_gemm.bf16_unit() if dtype_name == "bfloat16" else "fp32_fma"}
        if "mkl" in rates:
            record["mkl_version"] = mkl_gemm.version()
        _save_disk(entry_key, record)
    record = dict(record, shape=entry_key, cached=cached)
    rates = ", ".join(f"{i} {g:.0f}" for i, g in record["gflops"].items())
    mkl_note = "" if mkl_gemm.available() else f"; mkl not a candidate: {mkl_gemm.unavailable_reason()}"
    unit = f"cpu_gemm runs on {record['cpu_gemm_unit']}; " if "cpu_gemm_unit" in record else ""
    print(f"matmul_impl=auto: {entry_key} (x @ w, dx, dW) -> {record['impl']} "
          f"[{unit}GFLOP/s measured at {record.get('probe_shape', '?')}{', cached for this host' if cached else ''}: "
          f"{rates}; paired speed-up over xla: {record.get('speedup_over_xla')}; a kernel needs "
          f">{_KERNEL_MARGIN:.2f}x the best XLA{mkl_note}]", file=sys.stderr, flush=True)
    return record


def _probe(dtype, m: int, k: int, n: int, transposed_b: bool) -> tuple[dict, dict, str]:
    """Returns ({impl: best FLOP/s of forward + dx + dW on this shape}, {impl: median paired speed-up
    over "xla"}, the M x K x N timed)."""
    # Wider layers than these are timed at these widths (rates are flat there): a probe of a large
    # model's shapes stays a few seconds and never allocates its full-size weights.
    k, n = min(k, _PROBE_MAX_K), min(n, _PROBE_MAX_N)
    rows = min(m, max(_PROBE_MIN_ROWS, int(_PROBE_FLOPS // (2 * k * n))))
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(keys[0], (rows, k), dtype)
    w = jax.random.normal(keys[1], (n, k) if transposed_b else (k, n), dtype)
    dy = jax.random.normal(keys[2], (rows, n), dtype)

    def step(impl):
        def f(x, w, dy):
            y = dot(x, w, impl=impl, trans_b=transposed_b)
            dx = dot(dy, w, impl=impl, trans_b=not transposed_b)
            dw = dot(dy, x, impl=impl, trans_a=True) if transposed_b else dot(x, dy, impl=impl, trans_a=True)
            return y, dx, dw
        return jax.jit(f)

    impls = candidates(dtype.name)
    fns = {i: step(i) for i in impls}
    for f in fns.values():
        jax.block_until_ready(f(x, w, dy))
    times = {i: [] for i in impls}
    for rep in range(_PROBE_REPS):
        # Each round starts with another candidate: the first of a round ran slower (the rounds'
        # other allocations and caches), which made "xla", always first, look 1.5x slower than
        # cpu_gemm in the median ratio while its best time was 1.4x faster (fp32 output head).
        for i in impls[rep % len(impls):] + impls[:rep % len(impls)]:
            t = time.perf_counter()
            jax.block_until_ready(fns[i](x, w, dy))
            times[i].append(time.perf_counter() - t)
    flops = 3 * 2.0 * rows * k * n
    # Decided on paired ratios: within one round every candidate ran back to back under the same
    # load, so the median over rounds of t_xla / t_impl is steadier on a busy host than best times.
    speedups = {i: statistics.median(tx / ti for tx, ti in zip(times["xla"], times[i])) for i in impls}
    return {i: flops / min(t) for i, t in times.items()}, speedups, f"{rows}x{k}x{n}"
