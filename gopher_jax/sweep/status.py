"""The state of each run, read from the sweep directory alone (the source of truth for every executor):
DONE and FAILED markers written by the worker that trained it, and its lease (leases.py).

  done     DONE exists (training exited 0; summary.json is beside it)
  failed   FAILED exists (training exited with an error; its code and log tail are inside)
  running  a live lease (a worker renews it)
  left     never claimed, released (preempted), or its lease expired: the next worker resumes it
"""
from __future__ import annotations

import json
import time

from gopher_jax.sweep import leases
from gopher_jax.train import workdir_fs

DONE, FAILED, RUNNING, LEFT = "done", "failed", "running", "left"
DONE_FILE, FAILED_FILE = "DONE", "FAILED"


def run_status(run_dir: str, now: float | None = None) -> str:
    """Returns one of DONE, FAILED, RUNNING, LEFT for a run directory."""
    if workdir_fs.exists(workdir_fs.join(run_dir, DONE_FILE)):
        return DONE
    if workdir_fs.exists(workdir_fs.join(run_dir, FAILED_FILE)):
        return FAILED
    cur = leases.newest(run_dir) if workdir_fs.isdir(run_dir) else None
    return RUNNING if cur is not None and leases.is_held(cur[1], now) else LEFT


def statuses(out: str, names: list[str]) -> dict[str, str]:
    """Returns {run name: status} for the runs of a sweep directory."""
    now = time.time()
    return {n: run_status(workdir_fs.join(out, n), now) for n in names}


def read_marker(run_dir: str, which: str) -> dict:
    """Returns the JSON of a run's DONE or FAILED marker ({} if absent)."""
    path = workdir_fs.join(run_dir, which)
    return json.loads(workdir_fs.read_text(path)) if workdir_fs.exists(path) else {}


def write_marker(run_dir: str, which: str, record: dict) -> None:
    """Writes a run's DONE or FAILED marker."""
    workdir_fs.write_text_atomic(workdir_fs.join(run_dir, which), json.dumps(record, indent=1))


def clear_failed(out: str, names: list[str]) -> list[str]:
    """Renames FAILED markers to FAILED.<time> so a rerun of the sweep retries those runs; returns them."""
    retried = []
    for n in names:
        path = workdir_fs.join(out, n, FAILED_FILE)
        if workdir_fs.exists(path):
            workdir_fs.backend_for(path).replace_file(path, f"{path}.{int(time.time())}")
            retried.append(n)
    return retried
