"""Fault injection for reliability tests, set from gin (`faults.*`); all off by default.

Tests drive real `gopher-jax train` subprocesses through these instead of monkeypatching
internals: the injected fault travels the same code path a real one would.
"""
from __future__ import annotations

import dataclasses
import errno
import time

import gin
import numpy as np


@gin.configurable("faults")
@dataclasses.dataclass(frozen=True)
class Faults:
    """What to break. Batch indices count batches drawn from the training iterator (0-based)."""

    nan_loss_batches: tuple = ()  # these batches get NaN loss weights -> NaN loss and gradients
    sleep_per_step_s: float = 0.0  # slows each step so tests can signal a run mid-flight
    # A restore error raised on one host after its read of a checkpoint (gopher_jax/train/checkpoints.py):
    restore_error: str = ""  # "" (off) | one of RESTORE_ERRORS
    restore_error_process: int = -1  # only on this process index (-1 = every process)
    restore_error_steps: tuple = ()  # only when restoring these steps (() = every step)

    def restore_fault(self, step: int, process_index: int, step_dir: str) -> None:
        """Raises the configured restore error if it applies to this step and process."""
        if not self.restore_error:
            return
        if self.restore_error not in RESTORE_ERRORS:
            raise ValueError(f"faults.restore_error={self.restore_error!r} is not one of {sorted(RESTORE_ERRORS)}")
        if self.restore_error_process not in (-1, process_index):
            return
        if self.restore_error_steps and step not in tuple(self.restore_error_steps):
            return
        raise RESTORE_ERRORS[self.restore_error](step_dir)

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


# Injected restore errors: three that say nothing about the checkpoint's bytes, one that does.
RESTORE_ERRORS = {
    "PermissionError": lambda d: PermissionError(errno.EACCES, "Permission denied (injected by faults.restore_error)",
                                                 f"{d}/state/manifest.ocdbt"),
    "ValueError": lambda d: ValueError("Sharding passed to deserialization does not match the array's mesh "
                                       "(injected by faults.restore_error)"),
    "TypeError": lambda d: TypeError("restore() got an unexpected keyword argument 'item' "
                                     "(injected by faults.restore_error)"),
    "FileNotFoundError": lambda d: FileNotFoundError(errno.ENOENT, "No such file or directory (injected by "
                                                     "faults.restore_error)", f"{d}/state/d/0"),
}
