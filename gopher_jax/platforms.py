"""Which jax backend a command uses when the user did not say: CPU unless an accelerator is attached.

With the `[tpu]` or `[test]` extra installed, jax loads libtpu on first use and, on a host with no
TPU, libtpu prints initialisation errors (worker hostnames, accelerator type) on every command.
Entry points (`gopher-jax`, the benchmark scripts) call `default_to_cpu()` before jax is imported:
when no TPU or GPU is attached it sets JAX_PLATFORMS=cpu, so jax never loads the TPU plugin. A
JAX_PLATFORMS the user set, even to an empty string, is left as it is.

Presence is read from device files and environment only (libtpu is not loaded to ask): TPU VMs
expose /dev/accel* (v2-v4, v5p) or VFIO groups /dev/vfio/<n> (v5e, v6e) and TPU runtimes set
TPU_ACCELERATOR_TYPE; NVIDIA and ROCm GPUs expose /dev/nvidia<n> and /dev/kfd.
"""
from __future__ import annotations

import glob
import os

TPU_ENV = ("TPU_ACCELERATOR_TYPE",)


def tpu_attached(environ=os.environ, dev: str = "/dev") -> bool:
    """Returns True if this host has TPU chips (device files) or a TPU runtime environment."""
    if any(environ.get(k) for k in TPU_ENV):
        return True
    return bool(glob.glob(os.path.join(dev, "accel*")) or glob.glob(os.path.join(dev, "vfio", "[0-9]*")))


def gpu_attached(dev: str = "/dev") -> bool:
    """Returns True if this host has an NVIDIA or AMD GPU device file."""
    return bool(glob.glob(os.path.join(dev, "nvidia[0-9]*")) or os.path.exists(os.path.join(dev, "kfd")))


def default_to_cpu(environ=os.environ, dev: str = "/dev") -> str | None:
    """Sets JAX_PLATFORMS=cpu in `environ` when it is unset and no TPU or GPU is attached.

    Returns the value JAX_PLATFORMS now has (None when unset: jax picks the accelerator)."""
    if "JAX_PLATFORMS" not in environ and not tpu_attached(environ, dev) and not gpu_attached(dev):
        environ["JAX_PLATFORMS"] = "cpu"
    return environ.get("JAX_PLATFORMS")
