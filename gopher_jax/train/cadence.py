"""When the loop logs, evaluates and checkpoints: pure functions of the step (unit-tested without jax)."""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Cadence:
    """train.steps / log_every / eval_every / checkpoint_every, answered per step (steps count from 1)."""

    steps: int
    log_every: int
    eval_every: int  # 0 = only at the end
    checkpoint_every: int

    def is_last(self, step: int) -> bool:
        return step == self.steps

    def logs(self, step: int) -> bool:
        """A metrics record (and the progress bar) at every log_every steps and at the end."""
        return step % self.log_every == 0 or self.is_last(step)

    def evaluates(self, step: int) -> bool:
        """Held-out evaluation at every eval_every steps and at the end."""
        return bool(self.eval_every and step % self.eval_every == 0) or self.is_last(step)

    def checkpoints(self, step: int) -> bool:
        """A checkpoint at every checkpoint_every steps and at the end (that one forced: waited for)."""
        return step % self.checkpoint_every == 0 or self.is_last(step)
