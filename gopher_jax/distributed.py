"""Multi-host start-up: `jax.distributed.initialize` from flags or the environment, once per process.

Three cases, tried in order:
  1. explicit coordinator (flags, or GOPHER_JAX_COORDINATOR / GOPHER_JAX_NUM_PROCESSES /
     GOPHER_JAX_PROCESS_ID): any cluster, and the two-process CPU test;
  2. a Cloud TPU VM slice started by launch_tpu.sh (GOPHER_JAX_DISTRIBUTED=auto), a multi-host
     slice (TPU_WORKER_HOSTNAMES lists more than one host) or a multi-slice job
     (MEGASCALE_COORDINATOR_ADDRESS): jax reads coordinator and worker id from the TPU metadata;
  3. otherwise a single process: nothing to do (a laptop, one TPU VM host, the tests).
Must run before anything touches a jax backend (jax.devices(), jit, arrays).
"""
from __future__ import annotations

import os

import jax

ENV_COORDINATOR = "GOPHER_JAX_COORDINATOR"  # host:port of process 0
ENV_NUM_PROCESSES = "GOPHER_JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "GOPHER_JAX_PROCESS_ID"
ENV_MODE = "GOPHER_JAX_DISTRIBUTED"  # "auto": jax.distributed.initialize() with cluster auto-detection

_done: str | None = None


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not an integer; set it to e.g. 0, 1, 2") from None


def _on_multihost_tpu() -> bool:
    hosts = [h for h in os.environ.get("TPU_WORKER_HOSTNAMES", "").split(",") if h.strip()]
    return (os.environ.get(ENV_MODE) == "auto" or len(hosts) > 1
            or bool(os.environ.get("MEGASCALE_COORDINATOR_ADDRESS")))


def maybe_initialize(coordinator: str | None = None, num_processes: int | None = None,
                     process_id: int | None = None) -> str:
    """Initialises jax's distributed runtime if this is a multi-process run.

    Arguments override the GOPHER_JAX_* environment variables. Returns what was done:
    "explicit", "tpu-auto", "single-process" or "already" (a second call is a no-op).
    """
    global _done
    if _done is not None:
        return "already"
    coordinator = coordinator or os.environ.get(ENV_COORDINATOR) or None
    num_processes = num_processes if num_processes is not None else _env_int(ENV_NUM_PROCESSES)
    process_id = process_id if process_id is not None else _env_int(ENV_PROCESS_ID)
    given = {"coordinator": coordinator, "num_processes": num_processes, "process_id": process_id}
    if any(v is not None for v in given.values()):
        missing = [k for k, v in given.items() if v is None]
        if missing:
            raise ValueError(f"multi-process run needs coordinator, num_processes and process_id; got {given}. "
                             f"Set --{missing[0]} (or {ENV_COORDINATOR}/{ENV_NUM_PROCESSES}/{ENV_PROCESS_ID})")
        if not 0 <= process_id < num_processes:
            raise ValueError(f"process_id={process_id} must be in [0, num_processes={num_processes})")
        if ":" not in coordinator:
            raise ValueError(f"coordinator={coordinator!r} needs a port, e.g. {coordinator}:12345")
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                                   process_id=process_id)
        _done = "explicit"
    elif _on_multihost_tpu():
        jax.distributed.initialize()  # the TPU VM metadata names the coordinator and this worker
        _done = "tpu-auto"
    else:
        _done = "single-process"
    return _done
