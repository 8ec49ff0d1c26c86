"""Where metrics go: metrics.jsonl, TensorBoard, and the loss-curve PNG at the end."""
from __future__ import annotations

import io
import json
import os

from gopher_jax.train import workdir_fs


class MetricsLog:
    """Appends one JSON object per logged step to `workdir/metrics.jsonl` and mirrors it to TensorBoard."""

    def __init__(self, workdir: str, enabled: bool = True):
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.enabled = enabled
        self._tb = None
        if enabled:
            try:
                from gopher_jax.train.tb_events import summary_writer
                self._tb = summary_writer(os.path.join(workdir, "tensorboard"))
            except Exception as e:  # TensorBoard is a nicety; never lose a run over it
                print(f"note: TensorBoard logging disabled ({e})")

    def write(self, record: dict) -> None:
        """Writes {'step': ..., name: value, ...}."""
        if not self.enabled:
            return
        workdir_fs.append_text(self.path, json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    self._tb.scalar(k, v, record["step"])
            self._tb.flush()

    def records(self) -> list[dict]:
        """Returns every record written so far (this run and earlier runs in the workdir)."""
        if not workdir_fs.exists(self.path):
            return []
        return [json.loads(line) for line in workdir_fs.read_text(self.path).splitlines() if line.strip()]

    def plot(self, png_path: str) -> str | None:
        """Draws train and held-out loss against step; returns the PNG path (None if no data)."""
        recs = self.records()
        train = [(r["step"], r["loss"]) for r in recs if "loss" in r]
        held = [(r["step"], r["eval_loss"]) for r in recs if "eval_loss" in r]
        if not self.enabled or not train:
            return None
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4.5))
        ax.plot(*zip(*train), label="train loss", lw=1.2)
        if held:
            ax.plot(*zip(*held), "o-", label="held-out loss", lw=1.5)
        ax.set_xlabel("step")
        ax.set_ylabel("cross-entropy (nats/token)")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        buf = io.BytesIO()  # via the workdir's filesystem: a gs:// run gets its PNG in the bucket
        fig.savefig(buf, format="png", dpi=110)
        plt.close(fig)
        workdir_fs.write_bytes_atomic(png_path, buf.getvalue())
        return png_path
