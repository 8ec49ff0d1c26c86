"""What the loop does when SIGTERM asked it to stop: checkpoint (unless this step already is), wait
until it is on disk, log the event and raise signals.Preempted (exit code EXIT_PREEMPTED).

A function of the checkpointer, the metrics log and a state-to-save callback, so it is unit-tested
with fakes (tests/train/test_loop_parts.py) as well as end to end (tests/reliability/test_kill_resume.py).
"""
from __future__ import annotations

import sys
from typing import Callable

from gopher_jax.train.signals import EXIT_PREEMPTED, Preempted


def stop_for_preemption(step: int, signal_name: str, ckpt, log, save: Callable[[], None], already_saved: bool,
                        close_progress: Callable[[], None] = lambda: None, record: dict | None = None) -> None:
    """Saves step `step` (via `save`, forced) unless `already_saved`, closes the checkpointer (waits for
    the write), logs {"event": "preempted", **record} (e.g. the goodput breakdown) and raises Preempted."""
    if not already_saved:
        save()
    ckpt.close()  # waits: the checkpoint is on disk before we exit
    log.write({"step": step, "event": "preempted", "signal": signal_name, **(record or {})})
    close_progress()
    print(f"preempted ({signal_name}) at step {step}: checkpoint {ckpt.step_dir(step)} is on disk; "
          f"exiting with code {EXIT_PREEMPTED}; continue with --resume", file=sys.stderr, flush=True)
    raise Preempted(step, ckpt.directory)
