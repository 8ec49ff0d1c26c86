"""`--executor=ray`: one Ray task per run on an existing Ray cluster (a TPU-VM cluster, or a local one).

Ray places and restarts work; the sweep directory stays the source of truth. Each task claims its
run's lease itself (worker.work with only=[run], no waiting), trains it in the Ray worker process
with `gopher-jax train --resume`, and marks it DONE or FAILED. The driver keeps at most `--workers`
tasks in flight and resubmits runs that are still left (a task lost with its node, a lease that
expired), so a restarted driver or a lost node resumes without rerunning finished work.

A task asks Ray for `cpus_per_run` CPUs plus `resources` (e.g. {"TPU": 4} for one v4 host) and runs
with the same XLA_FLAGS / JAX_PLATFORMS a local worker of `--workers=N` gets (devices.py), through
its runtime_env; Ray keeps one worker process per such environment, so JAX starts once per process.
"""
from __future__ import annotations

import time

from gopher_jax.sweep import devices, leases, status
from gopher_jax.sweep.progress import Progress, original_stdout_writer

POLL_S = 2.0
BUSY = -1  # the task found its run leased by a live worker elsewhere


def train_one(out: str, name: str, ttl_s: float) -> int:
    """Ray task body: claims and trains one run if it is free; returns its exit code, or BUSY."""
    from gopher_jax.sweep import worker
    if status.run_status(f"{out.rstrip('/')}/{name}") == status.RUNNING:
        return BUSY
    return worker.work(out, leases.make_owner("ray"), only=[name], ttl_s=ttl_s, wait=False)


def run_ray(out: str, names: list[str], *, address: str | None = None, workers: int = 1,
            ttl_s: float = leases.DEFAULT_TTL_S, cpus_per_run: float = 1.0, resources: dict | None = None,
            accelerator_host: bool = False) -> int:
    """Trains every unfinished run as Ray tasks (at most `workers` at once); returns 0, or 1 if any failed."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False)
    env = {} if accelerator_host else devices.worker_env(workers)
    task = ray.remote(train_one).options(num_cpus=cpus_per_run, resources=resources or {},
                                         runtime_env={"env_vars": env}, max_retries=1)
    write = original_stdout_writer()
    progress = Progress(out, names, workers, write)
    in_flight: dict = {}
    while True:
        states = progress.update()
        left = [n for n in names if states[n] == status.LEFT and n not in in_flight.values()]
        for n in left[:max(0, workers - len(in_flight))]:
            in_flight[task.remote(out, n, ttl_s)] = n
        if not in_flight:
            if all(s in (status.DONE, status.FAILED) for s in states.values()):
                break
            time.sleep(POLL_S)  # runs leased by live workers elsewhere: wait for them, or their expiry
            continue
        ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=POLL_S)
        for ref in ready:
            name = in_flight.pop(ref)
            try:
                ray.get(ref)
            except Exception as e:  # noqa: BLE001 - a lost task: its lease expires, the run is resubmitted
                write(f"run {name}: Ray task lost ({type(e).__name__}: {e}); it will be resubmitted")
    progress.update()
    return 0 if all(s == status.DONE for s in progress.last.values()) else 1
