"""Splitting one host between `--workers=N` local worker processes.

On a CPU host each worker gets its own slice of cores (sched_setaffinity, so XLA's thread pool stays
inside it) and its own emulated devices: the host's `--xla_force_host_platform_device_count` (1 if
unset) divided by N, set in the worker's XLA_FLAGS before it imports JAX. Every worker therefore has
the same device count, which is the count the arms are validated against, and the same count a Ray
task gets (ray_executor.py), so both executors train the same runs identically.

Accelerator hosts are not split here: a TPU VM's chips belong to one process per host, so a pod
runs one worker per host (or one Ray task per slice); see docs/ablations.md.
"""
from __future__ import annotations

import ctypes
import os
import re
import signal

_DEVICE_FLAG = re.compile(r"--xla_force_host_platform_device_count=(\d+)")
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def host_cpu_devices(environ=os.environ) -> int:
    """Returns the emulated CPU device count this host's XLA_FLAGS ask for (1 if they do not)."""
    m = _DEVICE_FLAG.search(environ.get("XLA_FLAGS", ""))
    return int(m.group(1)) if m else 1


def devices_per_worker(workers: int, environ=os.environ) -> int:
    """Returns the CPU devices each of `workers` workers gets (at least 1)."""
    return max(1, host_cpu_devices(environ) // workers)


def worker_env(workers: int, environ=os.environ) -> dict[str, str]:
    """Returns the environment variables a worker process needs: its XLA_FLAGS device count, CPU JAX."""
    flags = _DEVICE_FLAG.sub("", environ.get("XLA_FLAGS", "")).strip()
    flags = f"{flags} --xla_force_host_platform_device_count={devices_per_worker(workers, environ)}".strip()
    return {"XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}


def worker_cpus(index: int, workers: int) -> set[int]:
    """Returns the cores of worker `index`: a contiguous share of this process's cores (shared when
    there are fewer cores than workers)."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < workers:
        return {cores[index % len(cores)]}
    per = len(cores) // workers
    return set(cores[index * per:(index + 1) * per] if index < workers - 1 else cores[index * per:])


CPUS_ENV = "GOPHER_JAX_SWEEP_CPUS"  # cores a worker pins itself to, e.g. "0,1"
PARENT_ENV = "GOPHER_JAX_SWEEP_PARENT"  # pid of the sweep command that started the worker


def child_env(cpus: set[int] | None) -> dict[str, str]:
    """Returns the variables that make a worker process pin itself and die with this process
    (read by apply_child_setup in the worker: no preexec_fn, so no fork of a threaded parent)."""
    env = {PARENT_ENV: str(os.getpid())}
    if cpus:
        env[CPUS_ENV] = ",".join(str(c) for c in sorted(cpus))
    return env


def apply_child_setup(environ=os.environ) -> None:
    """In a worker: pins it to its cores and has the kernel SIGKILL it when its parent dies, so
    killing a sweep never leaves a worker training on behind its back."""
    if environ.get(CPUS_ENV):
        os.sched_setaffinity(0, {int(c) for c in environ[CPUS_ENV].split(",")})
    parent = environ.get(PARENT_ENV)
    if not parent:
        return
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:  # not Linux: the worker outlives a killed sweep until its run ends
        return
    if os.getppid() != int(parent):  # the parent died before prctl took effect
        os._exit(1)
