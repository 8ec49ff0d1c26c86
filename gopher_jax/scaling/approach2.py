"""Chinchilla approach 2: IsoFLOP profiles (Sec. 3.2, Fig. 3).

For each FLOP budget, fit a parabola to loss against log N; its vertex is N_opt(C). D_opt(C) is
read off the same budget's runs (log D is linear in log N at fixed C, so this holds for any FLOP
counting convention). Then N_opt = k_N C^a and D_opt = k_D C^b are straight lines in log-log space.
Bootstrap: residual bootstrap inside each budget (each budget's parabola fitted values plus its
own residuals drawn with replacement), so every resample keeps the sweep's design -- the same
model sizes at every budget -- and a sweep with 4-5 sizes per budget still gets intervals
(resampling rows would often leave fewer than 3 distinct sizes in a budget).
"""
from __future__ import annotations

import numpy as np

import warnings

from gopher_jax.scaling.bootstrap import DEFAULT_LEVEL, FitResult, percentile_intervals
from gopher_jax.scaling.powerlaw import fit_power_law
from gopher_jax.scaling.runs import Runs


def budget_groups(runs: Runs, rel_tol: float = 0.05) -> list[np.ndarray]:
    """Returns row indices per FLOP budget; budgets within `rel_tol` of each other are one budget
    (a sweep rounds steps, so planned and realised FLOPs differ slightly)."""
    order = np.argsort(runs.C)
    groups, current = [], [order[0]]
    for i in order[1:]:
        if runs.C[i] <= runs.C[current[0]] * (1 + rel_tol):
            current.append(i)
        else:
            groups.append(np.array(current)), current.clear(), current.append(i)
    groups.append(np.array(current))
    return groups


def fit_budget(runs: Runs, robust: bool = True) -> dict[str, float]:
    """Returns the vertex of one budget's parabola: C, N_opt, D_opt, loss_opt and the coefficients.
    `robust` fits the parabola with Huber weights (gopher_jax/scaling/robust.py), so one bad run
    does not move the vertex; 'downweighted' lists the runs it gave less than full weight."""
    x = np.log(runs.N)
    if len(np.unique(np.round(x, 6))) < 3:
        raise ValueError(f"budget C={np.median(runs.C):.3g} has {len(np.unique(x))} distinct model sizes; "
                         f"a parabola needs >= 3 (add sizes to the sweep)")
    if robust:
        from gopher_jax.scaling.robust import huber_polyfit
        (p2, p1, p0), weights = huber_polyfit(x, runs.loss, 2)
    else:
        (p2, p1, p0), weights = np.polyfit(x, runs.loss, 2), np.ones(len(x))
    if p2 <= 0:
        raise ValueError(f"budget C={np.median(runs.C):.3g}: loss vs log N curves downward (p2={p2:.3g}), "
                         f"no minimum; add sizes on both sides of the best run or drop this budget")
    x_opt = -p1 / (2 * p2)
    s, k = np.polyfit(x, np.log(runs.D), 1)
    return {"C": float(np.exp(np.mean(np.log(runs.C)))), "N_opt": float(np.exp(x_opt)),
            "D_opt": float(np.exp(s * x_opt + k)), "loss_opt": float(p0 - p1 * p1 / (4 * p2)),
            "p2": float(p2), "p1": float(p1), "p0": float(p0),
            "N_min": float(runs.N.min()), "N_max": float(runs.N.max()),
            # a vertex outside the trained sizes is an extrapolation: the sweep should add sizes there
            "extrapolated": bool(not runs.N.min() <= np.exp(x_opt) <= runs.N.max()),
            "downweighted": [float(n) for n, w in zip(runs.N, weights) if w < 1.0]}


def fit_lines(budgets: list[dict], robust: bool = True) -> dict[str, float]:
    """Returns a, k_N (N_opt = k_N C^a) and b, k_D (D_opt = k_D C^b) through the budget vertices
    (Huber-weighted lines with `robust`)."""
    C = [v["C"] for v in budgets]
    a, k_N = fit_power_law(C, [v["N_opt"] for v in budgets], robust=robust)
    b, k_D = fit_power_law(C, [v["D_opt"] for v in budgets], robust=robust)
    return {"a": a, "b": b, "k_N": k_N, "k_D": k_D}


def fit_approach2(runs: Runs, *, n_boot: int = 200, level: float = DEFAULT_LEVEL, seed: int = 0,
                  rel_tol: float = 0.05, robust: bool = True) -> FitResult:
    """Returns approach 2's a, b, k_N, k_D with bootstrap intervals; extra['budgets'] has each vertex.
    `robust` (default) fits parabolas and lines with Huber weights; False is plain least squares."""
    groups = budget_groups(runs, rel_tol)
    # a budget with fewer than 3 sizes (a sweep still training) has no parabola: left out, and said
    skipped = {f"budget C={np.median(runs.C[g]):.3g}": f"{len(np.unique(runs.N[g]))} distinct sizes, a parabola "
               f"needs >= 3" for g in groups if len(np.unique(runs.N[g])) < 3}
    groups = [g for g in groups if len(np.unique(runs.N[g])) >= 3]
    if len(groups) < 2:
        raise ValueError(f"approach 2 needs >= 2 FLOP budgets with >= 3 model sizes each; the runs have "
                         f"{len(groups)} (C~{np.median(runs.C):.3g})" + (f"; left out: {skipped}" if skipped else ""))

    budgets = [fit_budget(runs.take(g), robust) for g in groups]
    intervals, failed = {}, 0
    if n_boot > 0:
        rng = np.random.default_rng(seed)
        fitted = np.empty(len(runs))
        for g, b in zip(groups, budgets):
            x = np.log(runs.N[g])
            fitted[g] = b["p2"] * x * x + b["p1"] * x + b["p0"]
        resid = runs.loss - fitted
        samples = []
        for _ in range(n_boot):
            loss = fitted.copy()
            for g in groups:
                loss[g] += rng.choice(resid[g], size=len(g), replace=True)
            sample = Runs(runs.N, runs.D, loss, runs.C, runs.step, runs.run)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    samples.append(fit_lines([fit_budget(sample.take(g), robust) for g in groups], robust))
            except ValueError:
                failed += 1
        intervals = percentile_intervals(samples, n_boot, level)
    return FitResult("2", fit_lines(budgets, robust), intervals, level, n_boot, failed,
                     extra={"budgets": budgets, "robust": robust, "skipped": skipped})
