"""Model-FLOPs utilisation: the one definition used by the loop, metrics.jsonl, the benchmarks and `plan`.

    MFU = model FLOPs per token x global tokens/s / global peak FLOP/s

* Model FLOPs per token: `COUNT` = 'model_causal' of gopher_jax/scaling/flops.py, the work the
  model must do: Chinchilla App. F with causal attention counted once (the T(T+1)/2 pairs the mask
  keeps), the embedding lookup as a gather (no FLOPs), and no recomputation (remat is hardware
  work, not model work; PaLM App. B).
* Global tokens/s: every process's tokens (the global batch), as the loop already measures.
* Global peak (`global_peak(dtype=)`), one per precision, the precision the run computes in
  (`ModelConfig.dtype`): on TPU, the chip's bf16 spec peak (gopher_jax/plan/hardware.py) per
  device x all devices of all processes (an fp32 run's matmuls run as bf16 passes there too). On
  CPU, the measured matmul peak of each host in that dtype, summed over hosts: for bf16 the best of
  the project's bf16 GEMMs (XLA's dot, XLA's dot with fp32 accumulation, the cpu_gemm kernel), so
  a bf16 run is divided by the bf16 units' peak and an fp32 run by the fp32 peak, and an MFU never
  exceeds 1 by dividing bf16 work by an fp32 peak. Emulated CPU devices, and several processes on
  one host, share that host's cores, so a host is counted once however many devices or processes
  it runs. Elsewhere (GPU, an unknown TPU), the measured matmul peak in that dtype of one device x
  all devices.

A CPU host's peak is cached (`cached_matmul_peak`): the best measurement so far per host (CPU
features), dtype, jax/jaxlib version and GEMM kernel (its sources and bf16 unit:
`matmul_impl.kernel_identity`, so a faster kernel or AMX switched on is measured anew), in the
kernel cache directory (kernels/build.py,
`matmul_peak_<key>.json`). A run with a cached peak does not measure; a new measurement only ever
raises the cached value (a peak measured while other work shares the cores is low, and dividing by
it once gave an `mfu` of 1.52). GOPHER_JAX_PEAK_REMEASURE=1 measures again (folded into the max).

`mfu_6n` (6 x all parameters per token, the yardstick of the scaling papers and of most peers) is
reported beside it; `mfu_count` names the count every `mfu` value uses.
"""
from __future__ import annotations

import dataclasses
import json
import os
import socket
import time

import jax
import jax.numpy as jnp

COUNT = "model_causal"  # the FLOP count behind every `mfu` this project prints

# jax `device_kind` -> gopher_jax.plan.hardware.CHIPS key (as reported by libtpu 0.0.42).
TPU_DEVICE_KINDS = {"TPU v2": "v2", "TPU v3": "v3", "TPU v4": "v4", "TPU v5 lite": "v5e", "TPU v5e": "v5e",
                    "TPU v5": "v5", "TPU v5p": "v5", "TPU v6 lite": "v6e", "TPU v6e": "v6e"}


@dataclasses.dataclass(frozen=True)
class Peak:
    """The global peak FLOP/s an MFU divides by, and where it came from."""
    flops: float  # FLOP/s of all processes' devices together
    source: str  # e.g. "TPU v4 bf16 spec x 8 devices" or "measured fp32 matmul, 1 host"
    hosts: int  # distinct hosts counted (CPU); processes otherwise


def _matmul_candidates(dtype, device) -> list:
    """The project's GEMMs for `dtype` on `device`'s platform (see kernels/matmul_impl.py)."""
    from gopher_jax.kernels import matmul_impl

    impls = matmul_impl.candidates(jnp.dtype(dtype).name, with_kernels=device.platform == "cpu")
    return [jax.jit(lambda x, i=i: matmul_impl.dot(x, x, impl=i)) for i in impls]


def measure_matmul_peak(dtype=jnp.float32, size: int = 2048, seconds: float = 1.0) -> float:
    """Returns the best FLOP/s of a jitted [size x size] matmul in `dtype` on device 0 over ~`seconds`.

    The best over the GEMMs the model can use for that dtype (`_matmul_candidates`), alternating
    between them. On a CPU host one device's matmul uses all the host's cores: the host's peak.
    """
    device = jax.local_devices()[0]
    a = jax.device_put(jnp.ones((size, size), dtype), device)
    fns = _matmul_candidates(dtype, device)
    for f in fns:
        f(a).block_until_ready()
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for f in fns:
            t = time.perf_counter()
            f(a).block_until_ready()
            best = max(best, 2.0 * size**3 / (time.perf_counter() - t))
    return best


# Set to 1 to measure the CPU peak again at start-up (the cache keeps the max of all measurements).
PEAK_REMEASURE_ENV = "GOPHER_JAX_PEAK_REMEASURE"


def _peak_cache_path(dtype):
    from gopher_jax.kernels import build, matmul_impl

    name = jnp.dtype(dtype).name
    # Keyed by the GEMM kernel too: a faster kernel (or AMX switched on) must not divide by an old, lower peak.
    key = build.host_key(b'matmul_peak', name.encode(), matmul_impl.kernel_identity())
    return build.cache_root() / f"matmul_peak_{name}_{key}.json"


def _cached_entry(dtype) -> tuple[float, float]:
    """The cached best peak FLOP/s of this host in `dtype` and how long it was measured, or (0.0, 0.0)."""
    try:
        record = json.loads(_peak_cache_path(dtype).read_text())
        # entries written before the measuring time was recorded came from full-length measurements
        return float(record["flops"]), float(record.get("seconds", DEFAULT_PEAK_SECONDS))
    except (OSError, ValueError, KeyError, TypeError):
        return 0.0, 0.0


def _quality(seconds: float) -> float:
    # A probe shorter than the default (the test suite's 0.2 s, on cores its other worker shares) reads
    # low. Stored as the host's peak, it became every later run's divisor: a tiny run printed MFU 99.8%.
    # So an entry serves only runs measuring at most as long; any full-length measurement ranks alike.
    return min(seconds, DEFAULT_PEAK_SECONDS)


def remember_matmul_peak(dtype, flops: float, seconds: float | None = None) -> float:
    """Folds a peak measured for `seconds` (default: full length) into this host's cache; returns the peak to use.

    A longer measurement replaces a shorter one's entry; among measurements of the same length the
    cache keeps the highest."""
    from gopher_jax.atomic_write import atomic_write

    quality = _quality(DEFAULT_PEAK_SECONDS if seconds is None else seconds)
    cached, cached_seconds = _cached_entry(dtype)
    cached_quality = _quality(cached_seconds)
    if cached_quality > quality:  # a longer measurement's entry stays
        return max(cached, flops)
    if cached_quality == quality and flops <= cached:
        return cached
    record = {"flops": flops, "dtype": jnp.dtype(dtype).name, "jax": jax.__version__, "seconds": quality,
              "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        atomic_write(str(_peak_cache_path(dtype)), lambda f: json.dump(record, f))
    except OSError:
        pass  # a read-only home: measure again next time
    return flops


def cached_matmul_peak(dtype=jnp.float32, seconds: float = 1.0, remeasure: bool | None = None) -> tuple[float, bool]:
    """Returns (this host's matmul peak FLOP/s in `dtype`, whether it came from the cache unmeasured).

    Without a usable cached value (none, or one measured for less time than `seconds`, capped at the
    default 1 s), or with `remeasure` (default: $GOPHER_JAX_PEAK_REMEASURE), measures for `seconds`
    and stores it (`remember_matmul_peak`): a re-measure can raise the cached peak, never lower it.
    """
    if remeasure is None:
        remeasure = os.environ.get(PEAK_REMEASURE_ENV, "") not in ("", "0")
    cached, cached_seconds = _cached_entry(dtype)
    if cached > 0 and _quality(cached_seconds) >= _quality(seconds) and not remeasure:
        return cached, True
    return remember_matmul_peak(dtype, measure_matmul_peak(dtype, seconds=seconds), seconds), False


def spec_peak_per_device(device) -> float | None:
    """Returns the bf16 spec FLOP/s of one jax device from plan/hardware.py, or None if unknown."""
    from gopher_jax.plan.hardware import CHIPS

    name = TPU_DEVICE_KINDS.get(getattr(device, "device_kind", ""))
    return CHIPS[name].peak_flops_per_device if name else None


def _per_host_cpu_peaks(seconds: float, dtype) -> list[float]:
    """Returns one measured matmul peak per distinct host of this job.

    One process per host (the lowest index) measures while the others wait on the coordination
    service's key-value store, so processes sharing a host neither compete for its cores during the
    measurement nor count it twice."""
    if jax.process_count() == 1:
        return [cached_matmul_peak(dtype, seconds=seconds)[0]]
    from jax._src import distributed

    kv, me, n = distributed.global_state.client, jax.process_index(), jax.process_count()
    timeout_ms = 10 * 60 * 1000
    tag = jnp.dtype(dtype).name
    kv.key_value_set(f"gopher_jax/mfu/host/{me}", socket.gethostname(), allow_overwrite=True)
    hosts = [kv.blocking_key_value_get(f"gopher_jax/mfu/host/{i}", timeout_ms) for i in range(n)]
    leaders = sorted({hosts.index(h) for h in hosts})
    if me in leaders:
        kv.key_value_set(f"gopher_jax/mfu/peak/{tag}/{me}", repr(cached_matmul_peak(dtype, seconds=seconds)[0]),
                         allow_overwrite=True)
    return [float(kv.blocking_key_value_get(f"gopher_jax/mfu/peak/{tag}/{i}", timeout_ms)) for i in leaders]


# How long a CPU host measures its matmul peak at start-up (best of repeated 2048^2 matmuls).
PEAK_SECONDS_ENV = "GOPHER_JAX_PEAK_SECONDS"
DEFAULT_PEAK_SECONDS = 1.0


def global_peak(seconds: float | None = None, dtype="float32") -> Peak:
    """Returns the peak FLOP/s of every device of every process for matmuls in `dtype` (the run's
    ModelConfig.dtype; see the module docstring). On a CPU host, the cached best peak
    (`cached_matmul_peak`), else `seconds` of measuring: default $GOPHER_JAX_PEAK_SECONDS, else 1 s
    (the test suite shortens it: it checks MFU's definition)."""
    if seconds is None:
        seconds = float(os.environ.get(PEAK_SECONDS_ENV, DEFAULT_PEAK_SECONDS))
    devices = jax.devices()
    name = {"float32": "fp32", "bfloat16": "bf16"}.get(jnp.dtype(dtype).name, jnp.dtype(dtype).name)
    if devices[0].platform == "cpu":
        peaks = _per_host_cpu_peaks(seconds, dtype)
        return Peak(sum(peaks), f"measured {name} matmul, {len(peaks)} host(s) (cached for this host)", len(peaks))
    spec = spec_peak_per_device(devices[0])
    if spec is not None:
        return Peak(spec * len(devices), f"{devices[0].device_kind} bf16 spec x {len(devices)} devices",
                    jax.process_count())
    measured = measure_matmul_peak(dtype, seconds=seconds)
    return Peak(measured * len(devices), f"measured {name} matmul of one {devices[0].device_kind} x "
                                         f"{len(devices)} devices", jax.process_count())


def model_flops_per_token(model_config, seq_len: int) -> float:
    """Returns the training FLOPs per token MFU counts (`COUNT`, gopher_jax/scaling/flops.py)."""
    from gopher_jax.scaling.flops import flops_per_token

    return flops_per_token(model_config, seq_len, method=COUNT)


def mfu_fields(model_config, seq_len: int, tokens_per_s: float, peak_flops: float) -> dict:
    """Returns {"mfu", "mfu_count", "mfu_6n"} for global `tokens_per_s` against global `peak_flops`."""
    from gopher_jax.scaling.flops import flops_per_token

    six_n = flops_per_token(model_config, seq_len, method="6nd")
    return {"mfu": model_flops_per_token(model_config, seq_len) * tokens_per_s / peak_flops, "mfu_count": COUNT,
            "mfu_6n": six_n * tokens_per_s / peak_flops}
