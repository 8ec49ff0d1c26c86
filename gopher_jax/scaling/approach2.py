"""Chinchilla approach 2: IsoFLOP profiles (Sec. 3.2, Fig. 3).

For each FLOP budget, fit a parabola to loss against log N; its vertex is N_opt(C). D_opt(C) is
read off the same budget's runs (log D is linear in log N at fixed C, so this holds for any FLOP
counting convention). Then N_opt = k_N C^a and D_opt = k_D C^b are straight lines in log-log space.
Bootstrap: rows are resampled inside each budget, so every budget keeps a parabola.
"""
from __future__ import annotations

import numpy as np

from gopher_jax.scaling.bootstrap import DEFAULT_LEVEL, FitResult, bootstrap
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


def fit_budget(runs: Runs) -> dict[str, float]:
    """Returns the vertex of one budget's parabola: C, N_opt, D_opt, loss_opt and the coefficients."""
    x = np.log(runs.N)
    if len(np.unique(np.round(x, 6))) < 3:
        raise ValueError(f"budget C={np.median(runs.C):.3g} has {len(np.unique(x))} distinct model sizes; "
                         f"a parabola needs >= 3 (add sizes to the sweep)")
    p2, p1, p0 = np.polyfit(x, runs.loss, 2)
    if p2 <= 0:
        raise ValueError(f"budget C={np.median(runs.C):.3g}: loss vs log N curves downward (p2={p2:.3g}), "
                         f"no minimum; add sizes on both sides of the best run or drop this budget")
    x_opt = -p1 / (2 * p2)
    s, k = np.polyfit(x, np.log(runs.D), 1)
    return {"C": float(np.exp(np.mean(np.log(runs.C)))), "N_opt": float(np.exp(x_opt)),
            "D_opt": float(np.exp(s * x_opt + k)), "loss_opt": float(p0 - p1 * p1 / (4 * p2)),
            "p2": float(p2), "p1": float(p1), "p0": float(p0),
            "N_min": float(runs.N.min()), "N_max": float(runs.N.max())}


def fit_lines(budgets: list[dict]) -> dict[str, float]:
    """Returns a, k_N (N_opt = k_N C^a) and b, k_D (D_opt = k_D C^b) through the budget vertices."""
    C = [v["C"] for v in budgets]
    a, k_N = fit_power_law(C, [v["N_opt"] for v in budgets])
    b, k_D = fit_power_law(C, [v["D_opt"] for v in budgets])
    return {"a": a, "b": b, "k_N": k_N, "k_D": k_D}


def fit_approach2(runs: Runs, *, n_boot: int = 200, level: float = DEFAULT_LEVEL, seed: int = 0,
                  rel_tol: float = 0.05) -> FitResult:
    """Returns approach 2's a, b, k_N, k_D with bootstrap intervals; extra['budgets'] has each vertex."""
    groups = budget_groups(runs, rel_tol)
    if len(groups) < 2:
        raise ValueError(f"approach 2 needs >= 2 FLOP budgets; the runs have one (C~{np.median(runs.C):.3g})")

    def fit(r: Runs) -> dict[str, float]:
        return fit_lines([fit_budget(r.take(g)) for g in budget_groups(r, rel_tol)])

    budgets = [fit_budget(runs.take(g)) for g in groups]
    intervals, failed = bootstrap(fit, runs, groups=groups, mode="within", n_boot=n_boot, level=level, seed=seed)
    return FitResult("2", fit_lines(budgets), intervals, level, n_boot, failed, extra={"budgets": budgets})
