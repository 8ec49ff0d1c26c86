"""The training loop's state as one object: what the loop's parts read and update.

One run = one `RunState`: the step and train state, the data iterator (its position), the spike
monitor, the latest metrics and evaluations, the checkpoint bookkeeping, and the timers (throughput
window, goodput). A new concern (multi-host agreement, goodput) adds a field here and one part in the
loop, not parameters threaded through every function.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from gopher_jax.train.goodput import Goodput
from gopher_jax.train.throughput_window import ThroughputWindow


@dataclasses.dataclass
class RunState:
    """Everything that changes while a run trains (configs and the trainer stay outside)."""

    workdir: str
    lead: bool
    state: Any  # the TrainState (params, optimizer state, step)
    step: int  # optimizer steps done
    data: Any  # the training iterator (MixtureBatches): its position is the data state
    monitor: Any  # spike_monitor.SpikeMonitor
    log: Any  # metrics_log.MetricsLog
    ckpt: Any  # checkpoints.Checkpointer
    cadence: Any  # cadence.Cadence
    window: ThroughputWindow
    goodput: Goodput
    metrics: dict = dataclasses.field(default_factory=dict)  # the last step's metrics (device arrays)
    last_eval: float | None = None
    last_evals: dict = dataclasses.field(default_factory=dict)
    last_saved: int | None = None  # step of the newest checkpoint this run wrote or restored
    bar: Any = None  # tqdm progress bar (lead process, --progress)

    def data_state(self) -> dict:
        """Returns what a checkpoint stores beside the train state: the data position and host counters."""
        return {**self.data.get_state(), "reliability": {"rewinds": self.monitor.rewinds}}

    def save(self, force: bool = False) -> None:
        """Checkpoints the current step (all hosts take part), timed as goodput's checkpoint phase."""
        with self.goodput.phase("checkpoint"):
            self.ckpt.save(self.step, self.state, self.data_state(), force=force)
        self.last_saved = self.step

    def close_progress(self) -> None:
        """Closes the progress bar, if any."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
