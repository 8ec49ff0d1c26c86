"""Goodput: the fraction of a run's wall time spent in productive training steps, and where the rest went.

Definitions (docs/training.md#goodput), all in seconds of this process's wall time since `train()` began:
- productive: training steps that advanced the run past the furthest step it had ever reached (a step's
  time runs from fetching its batch to the next step's start, less the phases below inside it, so host
  input and logging time are part of it);
- compile: the first step of this process (tracing, XLA compile and that step's run);
- startup: before the first step, minus restore: config validation, data packing/opening, mesh, init;
- restore: reading checkpoints (on --resume and on spike rewinds);
- checkpoint: starting saves and waiting for them (the loop's share; async writes overlap steps);
- eval: held-out evaluation;
- redone: steps repeated after a resume or a rewind (work lost to preemption or a spike);
- other: the remainder (after the last step: closing checkpoints, the summary, the loss plot).
goodput = productive / wall. Each process measures its own; process 0 logs.
"""
from __future__ import annotations

import contextlib
import time

PHASES = ("startup", "compile", "restore", "checkpoint", "eval", "redone", "productive")


class Goodput:
    """Accumulates seconds per phase; `clock` is injectable for tests."""

    def __init__(self, clock=time.perf_counter):
        self.clock = clock
        self.started = clock()
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self.first_step_started = None
        self._open = None
        self.furthest_step = 0  # steps at or below this were trained before (by an earlier run or before a rewind)

    @contextlib.contextmanager
    def phase(self, name: str):
        """Counts the time inside towards `name`."""
        t0 = self.clock()
        try:
            yield
        finally:
            self.seconds[name] += self.clock() - t0

    def step_started(self, step: int) -> None:
        """Marks the start of 1-based step `step`; closes the previous step (the first one ends start-up)."""
        now = self.clock()
        self._close_step(now)
        first = self.first_step_started is None
        if first:
            self.first_step_started = now
            self.seconds["startup"] = now - self.started - self.seconds["restore"]
        self._open = (step, now, sum(self.seconds.values()), first)

    def _close_step(self, now: float) -> None:
        # A step runs until the next one starts, less the named phases (eval, checkpoint, ...) inside it:
        # with async dispatch its device time is paid wherever the host next waits (a log, the next step).
        if getattr(self, "_open", None) is None:
            return
        step, t0, phases_before, first = self._open
        elapsed = max(0.0, now - t0 - (sum(self.seconds.values()) - phases_before))
        if first:
            self.seconds["compile"] += elapsed
        elif step <= self.furthest_step:
            self.seconds["redone"] += elapsed
        else:
            self.seconds["productive"] += elapsed
        self.furthest_step = max(self.furthest_step, step)
        self._open = None

    def rewound(self, furthest_step: int) -> None:
        """After a rewind: steps up to `furthest_step` will be trained again (booked as redone)."""
        self._close_step(self.clock())
        self.furthest_step = max(self.furthest_step, furthest_step)

    def finish(self) -> None:
        """Closes the last step (call after the loop)."""
        self._close_step(self.clock())

    def breakdown(self) -> dict:
        """Returns {"goodput": fraction, "wall_s": ..., "goodput/<phase>_s": ..., "goodput/other_s": ...}."""
        wall = self.clock() - self.started
        other = max(0.0, wall - sum(self.seconds.values()))
        out = {"goodput": self.seconds["productive"] / wall if wall > 0 else 0.0, "wall_s": wall}
        out.update({f"goodput/{k}_s": v for k, v in self.seconds.items()})
        out["goodput/other_s"] = other
        return out


def format_table(b: dict) -> str:
    """Returns the end-of-run goodput table: seconds and share of wall time per phase."""
    wall = b["wall_s"] or 1.0
    lines = [f"goodput {b['goodput']:.1%} of {b['wall_s']:.1f} s wall (productive steps / wall; docs/training.md#goodput)"]
    for k in (*PHASES, "other"):
        v = b[f"goodput/{k}_s"]
        lines.append(f"  {k:<11}{v:>10.1f} s{v / wall:>8.1%}")
    return "\n".join(lines)
