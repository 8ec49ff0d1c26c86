"""A sweep worker: claim one unfinished run, train it in this process with `gopher-jax train --resume`,
renew its lease while it trains, mark it DONE or FAILED, repeat until nothing is left.

Training runs in-process (the train command's own entry point, gopher_jax.cli.main), so a worker
imports JAX once and trains many runs on the devices it was started with; each run's stdout and
stderr (XLA's too) go to `<run>/train.log`. Every run is an ordinary train workdir.

Killing a worker (SIGKILL, a lost machine) kills its training with it; its lease stops being renewed,
expires, and the next worker to claim the run resumes it from its newest checkpoint. SIGTERM is the
train loop's preemption path: checkpoint, exit 75; the worker then releases the lease and stops.
A worker that finds its lease taken (it stalled past the TTL) SIGTERMs itself the same way.

  python -m gopher_jax.sweep.worker --out DIR [--only RUN ...] [--ttl 120]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import time
import traceback

from gopher_jax.sweep import leases, status
from gopher_jax.sweep.plan import RunPlan, load_plan
from gopher_jax.train import workdir_fs
from gopher_jax.train.signals import EXIT_PREEMPTED

POLL_S = 2.0  # how often an idle worker looks again for runs whose lease may expire
LOG_TAIL_LINES = 30


@contextlib.contextmanager
def _output_to(path: str):
    """Sends this process's fds 1 and 2 (Python's and C++'s writes) to `path` (appending) while inside."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    local = workdir_fs.scheme(path) is None
    target = path if local else path + ".local"  # object stores cannot append: copy the log up at the end
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    # Python's own streams too: a host (pytest, Ray) may have pointed sys.stdout away from fd 1.
    py_streams = sys.stdout, sys.stderr
    log = open(target, "a", buffering=1, encoding="utf-8")
    sys.stdout = sys.stderr = log
    try:
        yield
    finally:
        sys.stdout, sys.stderr = py_streams
        log.close()
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for f in (fd, *saved):
            os.close(f)
        if not local:
            with open(target) as f:
                workdir_fs.append_text(path, f.read())
            os.remove(target)


class _Heartbeat(threading.Thread):
    """Renews a lease every ttl/3 seconds; on losing it, SIGTERMs this process (checkpoint, exit 75)."""

    def __init__(self, lease: leases.Lease):
        super().__init__(daemon=True)
        self.lease, self.stopped, self.lost = lease, threading.Event(), False

    def run(self):
        while not self.stopped.wait(self.lease.ttl_s / 3):
            try:
                ok = leases.renew(self.lease)
            except OSError as e:  # a flaky store: try again next beat, the TTL covers a few misses
                print(f"sweep: lease renewal failed ({e}); retrying", file=sys.stderr, flush=True)
                continue
            if not ok:
                self.lost = True
                os.kill(os.getpid(), signal.SIGTERM)
                return


def _tail(path: str, n: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(workdir_fs.read_text(path).splitlines()[-n:])
    except OSError:
        return ""


def train_run(out: str, run: RunPlan, lease: leases.Lease) -> int:
    """Trains one claimed run in this process; writes DONE or FAILED; returns the train exit code."""
    from gopher_jax.cli import main as cli_main

    run_dir = workdir_fs.join(out, run.name)
    log_path = workdir_fs.join(run_dir, "train.log")
    started = time.time()
    workdir_fs.append_text(workdir_fs.join(run_dir, "attempts.jsonl"), json.dumps(
        {"owner": lease.owner, "generation": lease.generation, "started": started}) + "\n")
    beat = _Heartbeat(lease)
    beat.start()
    code = 1
    try:
        with _output_to(log_path):
            print(f"=== sweep: {lease.owner} trains {run.name} (lease generation {lease.generation}) ===", flush=True)
            try:
                code = int(cli_main(["train", *run.train_args(run_dir)]) or 0)
            except SystemExit as e:  # preemption (75), divergence, argparse
                code = e.code if isinstance(e.code, int) else 1
            except Exception:  # noqa: BLE001 - a run's failure must not kill the worker
                traceback.print_exc()
                code = 1
    finally:
        beat.stopped.set()
        beat.join()
    wall = time.time() - started
    if code == 0 and workdir_fs.exists(workdir_fs.join(run_dir, "summary.json")):
        status.write_marker(run_dir, status.DONE_FILE, {"owner": lease.owner, "wall_s": wall, "finished": time.time()})
    elif code != EXIT_PREEMPTED and not beat.lost:
        status.write_marker(run_dir, status.FAILED_FILE, {"owner": lease.owner, "exit_code": code, "wall_s": wall,
                                                          "log_tail": _tail(log_path)})
    leases.release(lease)
    return code


def work(out: str, owner: str, *, only: list[str] | None = None, ttl_s: float = leases.DEFAULT_TTL_S,
         wait: bool = True, log=print) -> int:
    """Claims and trains runs of the sweep in `out` until every run (of `only`) is done or failed.

    With `wait`, it waits while other workers hold leases (a lease that expires is claimed and resumed
    here); without, it returns once nothing is claimable.
    Returns 0, 1 if a run this worker trained failed, or 75 if training was preempted.
    """
    _, runs = load_plan(out)
    if only:
        runs = [r for r in runs if r.name in set(only)]
    tried, failed = set(), False
    while True:
        states = status.statuses(out, [r.name for r in runs])
        todo = [r for r in runs if states[r.name] in (status.LEFT, status.RUNNING) and r.name not in tried]
        if not todo:
            return 1 if failed else 0
        claimed = None
        for r in todo:
            if states[r.name] != status.LEFT:
                continue
            lease = leases.claim(workdir_fs.join(out, r.name), owner, ttl_s)
            if lease is None:
                continue
            if status.run_status(workdir_fs.join(out, r.name)) in (status.DONE, status.FAILED):
                leases.release(lease)  # it finished between our look and our claim
                continue
            claimed = (r, lease)
            break
        if claimed is None:
            if not wait:
                return 1 if failed else 0
            time.sleep(POLL_S)  # everything left is leased by live workers; one may die
            continue
        run, lease = claimed
        tried.add(run.name)
        code = train_run(out, run, lease)
        log(f"sweep worker {owner}: {run.name} exited {code}")
        if code == EXIT_PREEMPTED:
            return EXIT_PREEMPTED
        failed |= code != 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of a worker process started by the local executor (or by hand on another machine)."""
    p = argparse.ArgumentParser(prog="python -m gopher_jax.sweep.worker")
    p.add_argument("--out", required=True, help="the sweep directory")
    p.add_argument("--only", action="append", default=None, help="train only these runs (repeatable)")
    p.add_argument("--ttl", type=float, default=leases.DEFAULT_TTL_S, help="lease time-to-live, seconds")
    p.add_argument("--tag", default="", help="added to the owner name in leases")
    args = p.parse_args(argv)
    from gopher_jax.sweep.devices import apply_child_setup
    apply_child_setup()  # pinned cores, and die with the sweep command that started this worker
    from gopher_jax.platforms import default_to_cpu
    default_to_cpu()
    return work(args.out, leases.make_owner(args.tag), only=args.only, ttl_s=args.ttl,
                log=lambda m: print(m, flush=True))


if __name__ == "__main__":
    sys.exit(main())
