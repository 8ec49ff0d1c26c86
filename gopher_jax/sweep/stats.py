"""Seed-level statistics for comparing arms: mean with a t-interval, a paired t-test against the
baseline (runs paired by seed), and a bootstrap interval of the paired difference.

Definitions (what `compare` prints):
- mean ± CI: the sample mean of an arm's seeds ± t_{(1+level)/2, n-1} · s / sqrt(n), s the sample
  standard deviation (ddof=1). Undefined for one seed (no spread to estimate).
- Δ: mean over shared seeds of (arm - baseline), so seed effects (init, data order) cancel.
- p: two-sided paired t-test on those differences, t = mean(d) / (sd(d) / sqrt(n)), n-1 d.o.f.
  (the same test as scipy.stats.ttest_rel). Needs >= 2 shared seeds and differences that vary.
- bootstrap CI of Δ: scipy.stats.bootstrap, percentile method, of the mean paired difference
  (BCa is unstable with a handful of seeds). Resamples and seed are fixed: the table is reproducible.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import stats as sps

LEVEL = 0.95
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0


@dataclasses.dataclass(frozen=True)
class MeanCI:
    """Mean of n values with the half-width of its t-interval (None, with the reason, when undefined)."""

    n: int
    mean: float
    half_width: float | None
    why_none: str = ""


@dataclasses.dataclass(frozen=True)
class PairedDelta:
    """Arm minus baseline over shared seeds: mean difference, its t-interval, p-value, bootstrap CI."""

    n_pairs: int
    delta: float | None
    half_width: float | None
    p_value: float | None
    bootstrap_low: float | None
    bootstrap_high: float | None
    why_none: str = ""


def mean_ci(values, level: float = LEVEL) -> MeanCI:
    """Returns the mean of `values` and its two-sided t-interval half-width at `level`."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], np.float64)
    if len(x) == 0:
        return MeanCI(0, float("nan"), None, "no finished runs")
    if len(x) < 2:
        return MeanCI(1, float(x[0]), None, "one seed: no spread to estimate a CI from; add seeds")
    sem = x.std(ddof=1) / math.sqrt(len(x))
    return MeanCI(len(x), float(x.mean()), float(sps.t.ppf((1 + level) / 2, len(x) - 1) * sem))


def paired_delta(arm: dict, baseline: dict, level: float = LEVEL, resamples: int = BOOTSTRAP_RESAMPLES) -> PairedDelta:
    """Returns arm - baseline over the seeds both have ({seed: value} each): see the module docstring."""
    seeds = sorted(s for s in set(arm) & set(baseline)
                   if arm[s] is not None and baseline[s] is not None and math.isfinite(arm[s] - baseline[s]))
    d = np.array([arm[s] - baseline[s] for s in seeds], np.float64)
    if len(d) == 0:
        return PairedDelta(0, None, None, None, None, None, "no seed shared with the baseline")
    if len(d) < 2:
        return PairedDelta(1, float(d[0]), None, None, None, None,
                           "one shared seed: no CI or test; add seeds to both arms")
    sd = d.std(ddof=1)
    hw = float(sps.t.ppf((1 + level) / 2, len(d) - 1) * sd / math.sqrt(len(d)))
    if sd == 0:
        return PairedDelta(len(d), float(d.mean()), 0.0, None, float(d.mean()), float(d.mean()),
                           "identical differences on every seed: the t-test is undefined")
    t = d.mean() / (sd / math.sqrt(len(d)))
    p = float(2 * sps.t.sf(abs(t), len(d) - 1))
    boot = sps.bootstrap((d,), np.mean, confidence_level=level, n_resamples=resamples, method="percentile",
                         rng=np.random.default_rng(BOOTSTRAP_SEED))
    return PairedDelta(len(d), float(d.mean()), hw, p, float(boot.confidence_interval.low),
                       float(boot.confidence_interval.high))
