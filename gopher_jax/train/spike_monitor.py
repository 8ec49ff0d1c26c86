"""The host side of the spike policy: what to do when the guard (spikes.spike_guard) dropped updates.

The guard runs inside the jitted step and only counts dropped updates. `SpikeMonitor.observe` turns a
new count into a decision ("skip": report, and stop past train.max_skipped_updates; "rewind": restore
the newest checkpoint, and stop past train.max_rewinds). It holds no jax state, so the policy is
unit-tested with plain integers (tests/train/test_loop_parts.py); the loop carries the decision out.
"""
from __future__ import annotations

import dataclasses

NONE, SKIPPED, REWIND, DIVERGED = "none", "skipped", "rewind", "diverged"


@dataclasses.dataclass(frozen=True)
class Decision:
    """What the loop does after a look at the guard's count."""

    action: str  # NONE | SKIPPED (report the new drops) | REWIND (restore, then continue) | DIVERGED (stop)
    message: str = ""  # SKIPPED: the line to print; DIVERGED: why the run stops
    skipped: int = 0  # the guard's total dropped updates
    rewinds: int = 0  # rewinds so far, this one included
    stop_reason: str = ""  # SKIPPED past train.max_skipped_updates: report the drops, then stop with this


class SpikeMonitor:
    """Tracks the guard's dropped-update count against the policy's limits."""

    def __init__(self, policy: str, max_skipped_updates: int, max_rewinds: int, *, seen_skipped: int = 0,
                 rewinds: int = 0):
        self.policy = policy
        self.max_skipped_updates = max_skipped_updates
        self.max_rewinds = max_rewinds
        self.seen_skipped = seen_skipped  # count already acted on
        self.rewinds = rewinds  # survives a resume (stored with the data-iterator state)

    @property
    def active(self) -> bool:
        return self.policy != "none"

    def should_look(self, step: int, log_every: int, is_checkpoint: bool, stop_requested: bool) -> bool:
        """Returns whether to read the guard's count now: only where the host syncs anyway (log,
        checkpoint, stop), so the device queue is not drained every step, and a checkpoint never
        follows an unseen bad step."""
        return self.active and (step % log_every == 0 or is_checkpoint or stop_requested)

    def observe(self, step: int, skipped: int) -> Decision:
        """Returns the decision for the guard's total dropped-update count `skipped` at `step`."""
        if skipped <= self.seen_skipped:
            self.seen_skipped = skipped
            return Decision(NONE, skipped=skipped, rewinds=self.rewinds)
        if self.policy == "skip":
            new, self.seen_skipped = skipped - self.seen_skipped, skipped
            stop = (f"{skipped} updates were dropped for non-finite or spiking loss, more than "
                    f"train.max_skipped_updates={self.max_skipped_updates}"
                    if skipped > self.max_skipped_updates else "")
            return Decision(SKIPPED, f"step {step}: {new} update(s) dropped (non-finite or spiking loss), "
                                     f"{skipped} in total (limit train.max_skipped_updates="
                                     f"{self.max_skipped_updates})", skipped=skipped, rewinds=self.rewinds,
                            stop_reason=stop)
        self.rewinds += 1
        if self.rewinds > self.max_rewinds:
            return Decision(DIVERGED, f"a non-finite or spiking loss needed rewind number {self.rewinds}, more "
                                      f"than train.max_rewinds={self.max_rewinds}", skipped=skipped,
                            rewinds=self.rewinds)
        return Decision(REWIND, skipped=skipped, rewinds=self.rewinds)

    def rewound(self, skipped_after_restore: int) -> None:
        """Records the guard's count of the restored state (the count acted on from now)."""
        self.seen_skipped = skipped_after_restore

    def rewind_message(self, step: int, to_step: int, first_skipped: int, now: int) -> str:
        """Returns the line printed after a rewind."""
        return (f"step {step}: non-finite or spiking loss; rewound to step {to_step} and skipped batches "
                f"{first_skipped}..{now - 1} (rewind {self.rewinds} of at most {self.max_rewinds})")


def diverged_message(step: int, why: str, checkpoint_dir: str) -> str:
    """Returns the message of a run stopped by the spike policy."""
    return (f"training stopped at step {step}: {why}. The newest checkpoint in {checkpoint_dir} predates "
            f"the problem (no checkpoint was written after it). Try a lower optimizer.peak_learning_rate or "
            f"optimizer.clip_norm, inspect the data, or raise the limit, then run again with --resume.")
