"""Progress of a sweep, read from its directory: one line per run as it starts or ends, one line for
the sweep (done / running / failed / left, and an ETA).

ETA assumes the runs still to go take the mean wall time of the runs finished so far (their DONE
markers), spread over the workers: ETA = mean run time x (left + running / 2) / workers.
"""
from __future__ import annotations

import datetime
import json
import os
import time

from gopher_jax.sweep import status
from gopher_jax.train import workdir_fs


class Progress:
    """Prints a line whenever a run changes state, and the sweep line after it."""

    def __init__(self, out: str, names: list[str], workers: int, write=print):
        self.out, self.names, self.workers, self.write = out, names, max(1, workers), write
        self.last: dict[str, str] = {}
        self.started = time.time()

    def _run_line(self, name: str, state: str) -> str:
        run_dir = workdir_fs.join(self.out, name)
        if state == status.DONE:
            done = status.read_marker(run_dir, status.DONE_FILE)
            extra = ""
            try:
                s = json.loads(workdir_fs.read_text(workdir_fs.join(run_dir, "summary.json")))
                extra = (f", step {s['step']}, held-out {s.get('eval_bits_per_byte') or float('nan'):.4f} "
                         f"bits/byte (eval_bits_per_byte)")
            except (OSError, ValueError, KeyError, TypeError):
                pass
            return f"run {name}: done in {done.get('wall_s', float('nan')):.0f} s{extra}"
        if state == status.FAILED:
            f = status.read_marker(run_dir, status.FAILED_FILE)
            return f"run {name}: FAILED (exit {f.get('exit_code')}; see {workdir_fs.join(run_dir, 'train.log')})"
        if state == status.RUNNING:
            return f"run {name}: running"
        return f"run {name}: waiting (unclaimed, released or lease expired)"

    def sweep_line(self, states: dict[str, str]) -> str:
        """Returns the sweep's one-line summary with its ETA."""
        counts = {s: sum(v == s for v in states.values()) for s in (status.DONE, status.RUNNING, status.FAILED,
                                                                     status.LEFT)}
        walls = [status.read_marker(workdir_fs.join(self.out, n), status.DONE_FILE).get("wall_s")
                 for n, s in states.items() if s == status.DONE]
        walls = [w for w in walls if w]
        eta = "?"
        if walls:
            secs = sum(walls) / len(walls) * (counts[status.LEFT] + counts[status.RUNNING] / 2) / self.workers
            eta = str(datetime.timedelta(seconds=round(secs)))
        elapsed = datetime.timedelta(seconds=round(time.time() - self.started))
        return (f"sweep: {counts[status.DONE]}/{len(states)} done, {counts[status.RUNNING]} running, "
                f"{counts[status.FAILED]} failed, {counts[status.LEFT]} left; elapsed {elapsed}, ETA {eta} "
                f"(mean run time so far x runs to go / {self.workers} workers)")

    def update(self) -> dict[str, str]:
        """Reads every run's state, prints what changed; returns the states."""
        states = status.statuses(self.out, self.names)
        changed = [n for n in self.names if self.last.get(n) != states[n]]
        for n in changed:
            self.write(self._run_line(n, states[n]))
        if changed:
            self.write(self.sweep_line(states))
        self.last = states
        return states


def original_stdout_writer():
    """Returns a print-like function writing to this process's stdout as it is now, even while a
    worker in this process has redirected fd 1 into a run's train.log."""
    stream = os.fdopen(os.dup(1), "w", buffering=1)
    return lambda line: (stream.write(line + "\n"), stream.flush())
