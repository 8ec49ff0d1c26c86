"""Preemption: SIGTERM asks the loop to finish its step, checkpoint and exit with EXIT_PREEMPTED.

TPU VMs (spot/preemptible) and most schedulers send SIGTERM, then SIGKILL after a grace period
(~30 s on Cloud TPU). The handler only sets a flag: the step in flight finishes, the loop writes
a checkpoint, waits for it to be on disk, and exits with EXIT_PREEMPTED so a wrapper (see
docs/reliability.md, launch_tpu.sh) can tell "requeue me with --resume" from a real failure.
"""
from __future__ import annotations

import signal
import sys
import threading

# sysexits.h EX_TEMPFAIL: "temporary failure, the user is invited to retry". Distinct from 0 (done),
# 1 (error), 2 (usage) and 143/-15 (killed by SIGTERM *without* a checkpoint).
EXIT_PREEMPTED = 75


class Preempted(SystemExit):
    """Raised by the loop after the preemption checkpoint is on disk; exits with EXIT_PREEMPTED."""

    def __init__(self, step: int, checkpoint_dir: str):
        super().__init__(EXIT_PREEMPTED)
        self.step, self.checkpoint_dir = step, checkpoint_dir


class StopRequest:
    """Context manager: while active, SIGTERM sets `requested` instead of killing the process."""

    def __init__(self, signals=(signal.SIGTERM,)):
        self._signals = signals
        self._previous = {}
        self._event = threading.Event()
        self.signal_name = None

    @property
    def requested(self) -> bool:
        """Returns whether a stop signal arrived."""
        return self._event.is_set()

    def _handler(self, signum, frame):
        self.signal_name = signal.Signals(signum).name
        if not self._event.is_set():
            print(f"\n{self.signal_name} received: finishing the current step, then checkpointing and "
                  f"exiting with code {EXIT_PREEMPTED}", file=sys.stderr, flush=True)
        self._event.set()

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():  # signal handlers only live there
            for s in self._signals:
                self._previous[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc):
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous.clear()
        return False
