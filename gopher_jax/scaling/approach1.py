"""Chinchilla approach 1: the minimum-loss envelope of training curves (Sec. 3.1, Fig. 2).

Each run's curve (loss against training FLOPs, rows of the runs table grouped by `run`) is
interpolated in log-log space onto a common log-spaced FLOP grid (the paper uses 1,500 points).
At each grid point the run with the lowest loss is on the envelope; its N, and the tokens it has
seen there, are N_opt(C) and D_opt(C). Power laws N_opt = k_N C^a, D_opt = k_D C^b are fitted
through the envelope. Only grid points covered by >= 2 runs are used, so the ends of the range
(where one run is alone) do not decide the fit, and grid points won by the smallest or the largest
model are left out: there the optimum may lie beyond the trained sizes (the envelope is censored),
which flattens the fitted slope towards 0 (at small C every curve's best is the smallest model).
`c_range` limits the grid further, e.g. to the FLOP budgets of an IsoFLOP sweep, whose curves are
annealed only at their ends. Bootstrap: rows resampled inside each run (the runs themselves are the
design, the noise is in each curve's points).
"""
from __future__ import annotations

import numpy as np

from gopher_jax.scaling.bootstrap import DEFAULT_LEVEL, FitResult, bootstrap
from gopher_jax.scaling.powerlaw import fit_power_law
from gopher_jax.scaling.runs import Runs

GRID_POINTS = 1500  # Chinchilla Sec. 3.1: 1,500 logarithmically spaced FLOP values


def envelope(runs: Runs, points: int = GRID_POINTS, c_range: tuple[float, float] | None = None
             ) -> dict[str, np.ndarray]:
    """Returns the envelope: arrays C, N, D, loss (one entry per covered, uncensored grid point) and run names."""
    groups = runs.groups()
    if len(groups) < 2:
        raise ValueError(f"approach 1 needs training curves of >= 2 runs (a `run` or `step` column with "
                         f"several rows per run); got {len(groups)} run(s)")
    curves = []
    for name, idx in groups.items():
        order = idx[np.argsort(runs.C[idx])]
        if len(order) < 2:
            raise ValueError(f"approach 1: run {name!r} has a single point; a training curve needs >= 2")
        curves.append((name, runs.N[order[0]], np.log(runs.C[order]), np.log(runs.loss[order]),
                       np.log(runs.D[order])))
    lo, hi = np.log(runs.C).min(), np.log(runs.C).max()
    if c_range is not None:
        lo, hi = max(lo, np.log(c_range[0])), min(hi, np.log(c_range[1]))
        if lo >= hi:
            raise ValueError(f"approach 1: c_range {c_range} does not overlap the curves' FLOPs "
                             f"[{runs.C.min():.3g}, {runs.C.max():.3g}]")
    grid = np.linspace(lo, hi, points)
    logloss = np.full((len(curves), points), np.inf)
    logd = np.zeros((len(curves), points))
    for i, (_, _, lc, ll, ld) in enumerate(curves):
        inside = (grid >= lc[0]) & (grid <= lc[-1])
        logloss[i, inside] = np.interp(grid[inside], lc, ll)
        logd[i, inside] = np.interp(grid[inside], lc, ld)
    covered = np.isfinite(logloss).sum(0) >= 2
    if covered.sum() < 2:
        raise ValueError("approach 1: the runs' FLOP ranges barely overlap; train curves that share a FLOP range")
    best = np.argmin(logloss[:, covered], axis=0)
    cols = np.flatnonzero(covered)
    sizes = np.array([c[1] for c in curves])
    inside = (sizes[best] > sizes.min()) & (sizes[best] < sizes.max())
    if inside.sum() < 2:
        raise ValueError(f"approach 1: the smallest (N={sizes.min():.3g}) or largest (N={sizes.max():.3g}) "
                         f"model is best almost everywhere, so the optimum lies outside the trained sizes; "
                         f"add smaller/larger models")
    best, cols = best[inside], cols[inside]
    return {"C": np.exp(grid[cols]), "N": np.array([curves[j][1] for j in best]),
            "D": np.exp(logd[best, cols]), "loss": np.exp(logloss[best, cols]),
            "run": np.array([curves[j][0] for j in best])}


def fit_envelope(runs: Runs, points: int = GRID_POINTS, robust: bool = True,
                 c_range: tuple[float, float] | None = None) -> dict[str, float]:
    """Returns a, b, k_N, k_D of power laws through the envelope (Huber-weighted lines with `robust`)."""
    env = envelope(runs, points, c_range)
    if len(np.unique(env["N"])) < 2:
        raise ValueError(f"approach 1: one run (N={env['N'][0]:.3g}) is best at every FLOP count; "
                         f"add smaller/larger models or longer curves")
    a, k_N = fit_power_law(env["C"], env["N"], robust=robust)
    b, k_D = fit_power_law(env["C"], env["D"], robust=robust)
    return {"a": a, "b": b, "k_N": k_N, "k_D": k_D}


def fit_approach1(runs: Runs, *, n_boot: int = 200, level: float = DEFAULT_LEVEL, seed: int = 0,
                  points: int = GRID_POINTS, robust: bool = True,
                  c_range: tuple[float, float] | None = None) -> FitResult:
    """Returns approach 1's a, b, k_N, k_D with bootstrap intervals; extra['envelope'] for plots.
    `robust` (default) fits the envelope's lines with Huber weights; False is plain least squares."""
    groups = list(runs.groups().values())
    point = fit_envelope(runs, points, robust, c_range)
    intervals, failed = bootstrap(lambda r: fit_envelope(r, points, robust, c_range), runs, groups=groups, mode="within",
                                  n_boot=n_boot, level=level, seed=seed)
    env = envelope(runs, points, c_range)
    keep = np.unique(np.geomspace(1, len(env["C"]), 60).astype(int) - 1)  # a readable subsample
    extra = {"envelope": {k: [float(v) if k != "run" else str(v) for v in env[k][keep]] for k in env}}
    return FitResult("1", point, intervals, level, n_boot, failed, extra=extra)
