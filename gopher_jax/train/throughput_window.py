"""Tokens/s over the steps since the last log: the first (compiling) step and evaluation time left out."""
from __future__ import annotations

import contextlib
import time


class ThroughputWindow:
    """Times the steps between `restart()`s; `clock` is injectable for tests."""

    def __init__(self, tokens_per_step: int, clock=time.perf_counter):
        self.tokens_per_step = tokens_per_step
        self.clock = clock
        self.compile_s = None  # wall time of the first step (compile + run)
        self.restart()

    def step_done(self, step_started: float, block) -> None:
        """Counts one finished step; the first one (compile) is timed apart, after `block()` waits for it."""
        if self.compile_s is None:
            block()
            self.compile_s = self.clock() - step_started
            self.restart()
        else:
            self._steps += 1

    def tokens_per_s(self) -> float:
        """Returns tokens/s over the steps counted since the last restart (0.0 if none)."""
        elapsed = self.clock() - self._start - self._excluded
        return self._steps * self.tokens_per_step / elapsed if self._steps and elapsed > 0 else 0.0

    def restart(self) -> None:
        """Starts a new window."""
        self._start, self._steps, self._excluded = self.clock(), 0, 0.0

    @contextlib.contextmanager
    def excluded(self):
        """Time spent inside (held-out evaluation) does not count against the steps' throughput."""
        t0 = self.clock()
        try:
            yield
        finally:
            self._excluded += self.clock() - t0
