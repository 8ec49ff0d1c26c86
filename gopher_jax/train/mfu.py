"""Model-FLOPs utilisation against this machine's measured matmul peak."""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp


def measure_matmul_peak(dtype=jnp.float32, size: int = 2048, seconds: float = 1.0) -> float:
    """Returns the best FLOP/s of a jitted [size x size] matmul on device 0 over ~`seconds`.

    On a CPU host the emulated devices share the same cores, so one device's peak is the
    machine's; on accelerators multiply by the device count for the whole mesh.
    """
    device = jax.devices()[0]
    a = jax.device_put(jnp.ones((size, size), dtype), device)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t = time.perf_counter()
        f(a).block_until_ready()
        best = max(best, 2.0 * size**3 / (time.perf_counter() - t))
    return best


def machine_peak_flops(dtype=jnp.float32) -> float:
    """Returns the peak FLOP/s available to one training process (see measure_matmul_peak)."""
    peak = measure_matmul_peak(dtype)
    if jax.devices()[0].platform != "cpu":
        peak *= jax.local_device_count()
    return peak
