"""Blending datasets at target weights while tracking each one's over/under-sampling (MT-NLG §3.3).

Independent random draws (seqio's default `sample_from_datasets`) let the realised mix drift by
O(1/sqrt(n)); MT-NLG instead tracks how far each dataset is over or under its target share and
draws the one furthest behind, so after n draws every share is within a few 1/n of its target.
`BlendTracker` does that bookkeeping (and reports epochs per component, i.e. how much a small
dataset is repeated); `blend_datasets` / `tracked_sample_fn` apply it to tf.data and seqio.
"""
from __future__ import annotations

import collections
import dataclasses
from typing import Mapping, Sequence

import numpy as np

MODES = ("deficit", "tracked_random")


def normalize_weights(weights: Mapping[str, float]) -> dict[str, float]:
    """Returns weights scaled to sum to 1; raises ValueError naming a negative or all-zero set."""
    bad = {k: w for k, w in weights.items() if not w >= 0}
    if bad or not weights or sum(weights.values()) <= 0:
        raise ValueError(f"mixture weights {dict(weights)} must be >= 0 with a positive sum")
    total = float(sum(weights.values()))
    return {k: w / total for k, w in weights.items()}


@dataclasses.dataclass
class BlendTracker:
    """Chooses which component the next sample comes from, keeping the realised blend on target.

    mode "deficit": always the component with the largest deficit target * (n + 1) - count
    (deterministic; every share stays within 1/n of target). "tracked_random": a random draw
    among the components currently behind target, weighted by their deficit (still tracked,
    less regular). `sizes` (documents or tokens per component) turn counts into epochs.
    """

    weights: Mapping[str, float]
    sizes: Mapping[str, float] | None = None
    mode: str = "deficit"
    seed: int = 0
    counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"BlendTracker.mode={self.mode!r}: expected one of {MODES}")
        self.weights = normalize_weights(self.weights)
        self.names = list(self.weights)
        self._target = np.array([self.weights[n] for n in self.names])
        self._rng = np.random.default_rng(self.seed)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def next(self) -> str:
        """Returns the component to draw from next and records the draw."""
        counts = np.array([self.counts[n] for n in self.names], dtype=np.float64)
        deficit = self._target * (counts.sum() + 1) - counts
        if self.mode == "deficit":
            i = int(np.argmax(deficit))
        else:
            p = np.clip(deficit, 0, None) * (self._target > 0)
            i = int(self._rng.choice(len(p), p=p / p.sum())) if p.sum() > 0 else int(np.argmax(deficit))
        self.counts[self.names[i]] += 1
        return self.names[i]

    def take(self, n: int) -> list[str]:
        """Returns the next n component names."""
        return [self.next() for _ in range(n)]

    def realized(self) -> dict[str, float]:
        """Returns each component's share of the draws so far."""
        total = max(self.total, 1)
        return {n: self.counts[n] / total for n in self.names}

    def deviation(self) -> dict[str, float]:
        """Returns realised minus target share (positive = over-sampled relative to the blend)."""
        real = self.realized()
        return {n: real[n] - self.weights[n] for n in self.names}

    def epochs(self) -> dict[str, float]:
        """Returns draws / size per component (> 1: the component is repeated, i.e. over-sampled)."""
        if not self.sizes:
            raise ValueError("BlendTracker.epochs needs `sizes` (documents or tokens per component)")
        return {n: self.counts[n] / self.sizes[n] for n in self.names if self.sizes.get(n)}

    def report(self) -> str:
        """Returns a table of target, realised share, deviation and (if sizes are known) epochs."""
        lines = [f"{'component':<16}{'target':>9}{'realised':>10}{'dev':>9}" + ("  epochs" if self.sizes else "")]
        dev, real = self.deviation(), self.realized()
        for n in self.names:
            ep = f"  {self.counts[n] / self.sizes[n]:.3f}" if self.sizes and self.sizes.get(n) else ""
            lines.append(f"{n:<16}{self.weights[n]:>9.4f}{real[n]:>10.4f}{dev[n]:>+9.4f}{ep}")
        return "\n".join(lines)

    def state(self) -> dict:
        """Returns the counts (checkpoint them with the data iterator to resume the same blend)."""
        return {"counts": dict(self.counts), "rng": self._rng.bit_generator.state}

    def restore(self, state: Mapping) -> None:
        self.counts = collections.Counter(state["counts"])
        self._rng.bit_generator.state = state["rng"]


def blend_datasets(datasets: Sequence, weights: Sequence[float], seed: int | None = 0, mode: str = "deficit"):
    """Returns a tf.data.Dataset drawing from `datasets` in the tracker's order.

    Each component is repeated, so a small component is over-sampled (re-read) rather than
    letting the blend drift once it runs out.
    """
    import tensorflow as tf
    names = [str(i) for i in range(len(datasets))]
    tracker = BlendTracker(dict(zip(names, weights)), mode=mode, seed=0 if seed is None else int(seed))

    def choices():
        while True:
            yield np.int64(int(tracker.next()))

    choice = tf.data.Dataset.from_generator(choices, output_signature=tf.TensorSpec((), tf.int64))
    return tf.data.Dataset.choose_from_datasets([d.repeat() for d in datasets], choice)


def tracked_sample_fn(datasets, rates, seed):
    """A seqio `Mixture(sample_fn=...)` that blends with `BlendTracker` instead of random draws."""
    return blend_datasets(datasets, rates, seed)
