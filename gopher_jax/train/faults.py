"""Fault injection for reliability tests, set from gin (`faults.*`); all off by default.

Tests drive real `gopher-jax train` subprocesses through these instead of monkeypatching
internals: the injected fault travels the same code path a real one would.
"""
from __future__ import annotations

import dataclasses
import time

import gin
import numpy as np


@gin.configurable("faults")
@dataclasses.dataclass(frozen=True)
class Faults:
    """What to break. Batch indices count batches drawn from the training iterator (0-based)."""

    nan_loss_batches: tuple = ()  # these batches get NaN loss weights -> NaN loss and gradients
    sleep_per_step_s: float = 0.0  # slows each step so tests can signal a run mid-flight

    def apply(self, batch_index: int, batch: dict) -> dict:
        """Returns the host batch, poisoned if `batch_index` is listed; sleeps if asked to."""
        if self.sleep_per_step_s:
            time.sleep(self.sleep_per_step_s)
        if batch_index in tuple(self.nan_loss_batches):
            batch = dict(batch, loss_weights=np.full_like(batch["loss_weights"], np.nan))
        return batch

    @property
    def active(self) -> bool:
        """Returns whether any fault is configured."""
        return bool(self.nan_loss_batches) or bool(self.sleep_per_step_s)
