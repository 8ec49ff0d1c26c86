"""Percentile-bootstrap confidence intervals around any fit, and the result type of all fits."""
from __future__ import annotations

import dataclasses
import warnings
from typing import Callable, Sequence

import numpy as np

from gopher_jax.scaling.runs import Runs

# Chinchilla reports bootstrap intervals as 10th-90th percentiles (Table 2 caption); the
# CLI default follows it, tests use 95%.
DEFAULT_LEVEL = 0.8


@dataclasses.dataclass
class FitResult:
    """Point estimates, their bootstrap intervals, and anything else a fit wants to report."""

    approach: str
    params: dict[str, float]
    intervals: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)
    level: float = DEFAULT_LEVEL
    n_boot: int = 0
    n_failed: int = 0
    extra: dict = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict:
        """Returns a JSON-able dict: the params at top level, plus intervals and metadata.
        Non-finite numbers (a degenerate fit) become null, so the file stays standard JSON."""
        out = {"approach": self.approach, **{k: _finite_or_none(v) for k, v in self.params.items()}}
        out["intervals"] = {k: [_finite_or_none(lo), _finite_or_none(hi)] for k, (lo, hi) in self.intervals.items()}
        out["interval_level"] = self.level
        out["n_boot"] = self.n_boot
        out["n_boot_failed"] = self.n_failed
        out.update(self.extra)
        return out


def _finite_or_none(x) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


def resample(rng: np.random.Generator, groups: Sequence[np.ndarray], mode: str) -> np.ndarray:
    """Returns bootstrap row indices: 'rows' (i.i.d. rows), 'units' (whole groups) or 'within'
    (rows resampled inside each group, keeping every group, e.g. every FLOP budget)."""
    if mode == "rows":
        allrows = np.concatenate(groups)
        return rng.choice(allrows, size=len(allrows), replace=True)
    if mode == "units":
        pick = rng.integers(0, len(groups), size=len(groups))
        return np.concatenate([groups[i] for i in pick])
    if mode == "within":
        return np.concatenate([rng.choice(g, size=len(g), replace=True) for g in groups])
    raise ValueError(f"bootstrap mode={mode!r} is not one of ('rows', 'units', 'within')")


def bootstrap(fit: Callable[[Runs], dict[str, float]], runs: Runs, *, groups: Sequence[np.ndarray] | None = None,
              mode: str = "rows", n_boot: int = 200, level: float = DEFAULT_LEVEL, seed: int = 0
              ) -> tuple[dict[str, tuple[float, float]], int]:
    """Returns ({param: (lo, hi)} percentile intervals at `level`, number of failed resamples).

    `fit` maps a Runs table to a dict of floats; a resample where it raises ValueError (e.g. a
    budget whose parabola opens downwards) is counted as failed and left out.
    """
    if not 0 < level < 1:
        raise ValueError(f"interval level={level} must be in (0, 1), e.g. 0.8 for 10th-90th percentiles")
    if n_boot <= 0:
        return {}, 0
    groups = list(groups) if groups is not None else [np.arange(len(runs))]
    rng = np.random.default_rng(seed)
    samples: list[dict[str, float]] = []
    failed = 0
    for _ in range(n_boot):
        idx = resample(rng, groups, mode)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                samples.append(fit(runs.take(idx)))
        except ValueError:
            failed += 1
    return percentile_intervals(samples, n_boot, level), failed


def percentile_intervals(samples: list[dict[str, float]], n_boot: int, level: float) -> dict[str, tuple[float, float]]:
    """Returns {param: (lo, hi)} percentiles of the successful resamples' estimates."""
    if len(samples) < max(2, n_boot // 2):
        raise ValueError(f"bootstrap failed: only {len(samples)} of {n_boot} resamples could be fitted; "
                         f"the data are too few or too noisy for this approach")
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    return {k: tuple(float(x) for x in np.percentile([s[k] for s in samples], q)) for k in samples[0]}
