"""`--executor=local`: N worker processes on this host sharing the sweep directory.

`--workers=1` runs the worker inside the sweep command itself (no second JAX start-up); N > 1 starts
N `python -m gopher_jax.sweep.worker` processes, each pinned to its share of the cores with its share
of the emulated devices (devices.py), and killed by the kernel if the sweep command dies. The same
worker command, started by hand on other machines against the same directory, joins the sweep.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

from gopher_jax.sweep import devices, leases, worker
from gopher_jax.sweep.progress import Progress, original_stdout_writer

POLL_S = 2.0


def worker_command(out: str, ttl_s: float, tag: str = "", only: list[str] | None = None) -> list[str]:
    """Returns the command line of one worker process (training only the runs `only` names, if given)."""
    return [sys.executable, "-m", "gopher_jax.sweep.worker", f"--out={out}", f"--ttl={ttl_s:g}",
            *([f"--tag={tag}"] if tag else []), *[f"--only={n}" for n in only or ()]]


def run_local(out: str, names: list[str], *, workers: int = 1, ttl_s: float = leases.DEFAULT_TTL_S,
              only: list[str] | None = None) -> int:
    """Trains every unfinished run of the sweep (of `only`, if given) with `workers` workers; returns 0, or 1
    if any failed. `names` are the runs the progress line counts."""
    write = original_stdout_writer()
    progress = Progress(out, names, workers, write)
    progress.update()
    if workers == 1:
        stop = threading.Event()

        def watch():
            while not stop.wait(POLL_S):
                progress.update()
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            code = worker.work(out, leases.make_owner("w0"), only=only, ttl_s=ttl_s, log=write)
        finally:
            stop.set()
            watcher.join()
        progress.update()
        return code
    env = {**os.environ, **devices.worker_env(workers)}
    procs = [subprocess.Popen(worker_command(out, ttl_s, f"w{i}", only),
                              env={**env, **devices.child_env(devices.worker_cpus(i, workers))})
             for i in range(workers)]
    while any(p.poll() is None for p in procs):
        progress.update()
        time.sleep(POLL_S)
    progress.update()
    return 0 if all(p.returncode == 0 for p in procs) else 1
