"""Kaplan et al. 2020 fits: L(N) (Eq. 1.1), L(D) (Eq. 1.2) and L(N, D) (Eq. 1.5), in log space.

L(N) describes models trained to convergence and L(D) data-limited training of large models, so
from a runs table we fit L(N) to the lowest loss of each model size and L(D) to the lowest loss
at each token count, and L(N, D) to every row. Bootstrap: rows resampled.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import least_squares

from gopher_jax.scaling import constants as K
from gopher_jax.scaling.bootstrap import DEFAULT_LEVEL, FitResult, bootstrap
from gopher_jax.scaling.laws import kaplan_loss_nd
from gopher_jax.scaling.powerlaw import fit_power_law
from gopher_jax.scaling.runs import Runs


def fit_l_of_x(x, loss) -> tuple[float, float]:
    """Returns (alpha, X_c) of L = (X_c / x)^alpha, a line in log-log space."""
    p, k = fit_power_law(x, loss)  # L = k x^p with p = -alpha, k = X_c^alpha
    if p >= 0:
        raise ValueError(f"loss does not fall with size (slope {p:.3g}); Kaplan's power law needs it to")
    alpha = -p
    return alpha, float(np.exp(np.log(k) / alpha))


def lowest_per_value(x: np.ndarray, loss: np.ndarray, rel_tol: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """Returns (x, min loss) with x values within rel_tol of each other merged."""
    order = np.argsort(x)
    xs, ls = [], []
    for i in order:
        if xs and x[i] <= xs[-1] * (1 + rel_tol):
            ls[-1] = min(ls[-1], loss[i])
        else:
            xs.append(x[i]), ls.append(loss[i])
    return np.array(xs), np.array(ls)


def fit_l_nd(runs: Runs) -> dict[str, float]:
    """Returns N_c, D_c, alpha_N, alpha_D of Eq. 1.5 by least squares on log loss."""
    logN, logD, logL = np.log(runs.N), np.log(runs.D), np.log(runs.loss)

    def resid(p):
        lnc, ldc, an, ad = p
        return np.log(kaplan_loss_nd(runs.N, runs.D, np.exp(lnc), np.exp(ldc), an, ad)) - logL

    best = None
    for p0 in ([np.log(K.KAPLAN_ND_N_C), np.log(K.KAPLAN_ND_D_C), K.KAPLAN_ND_ALPHA_N, K.KAPLAN_ND_ALPHA_D],
               [logN.max() + 5, logD.max() + 5, 0.1, 0.1], [logN.mean(), logD.mean(), 0.3, 0.3]):
        r = least_squares(resid, p0, bounds=([-np.inf, -np.inf, 1e-4, 1e-4], [np.inf, np.inf, 5, 5]),
                          x_scale=[1, 1, 0.05, 0.05], xtol=1e-12, ftol=1e-12)
        if best is None or r.cost < best.cost:
            best = r
    lnc, ldc, an, ad = best.x
    return {"N_c": float(np.exp(lnc)), "D_c": float(np.exp(ldc)), "alpha_N": float(an), "alpha_D": float(ad)}


def _fit_all(runs: Runs) -> dict[str, float]:
    out = {}
    n, ln = lowest_per_value(runs.N, runs.loss)
    if len(n) >= 2:
        out["L(N).alpha_N"], out["L(N).N_c"] = fit_l_of_x(n, ln)
    d, ld = lowest_per_value(runs.D, runs.loss)
    if len(d) >= 2:
        out["L(D).alpha_D"], out["L(D).D_c"] = fit_l_of_x(d, ld)
    if len(runs) >= 5:
        out.update({f"L(N,D).{k}": v for k, v in fit_l_nd(runs).items()})
    return out


def fit_kaplan(runs: Runs, *, n_boot: int = 200, level: float = DEFAULT_LEVEL, seed: int = 0) -> FitResult:
    """Returns Kaplan L(N), L(D) and L(N, D) parameters (keys 'L(N).alpha_N', ...) with intervals."""
    point = _fit_all(runs)
    if not point:
        raise ValueError("Kaplan fits need >= 2 distinct N or D values, or >= 5 runs for L(N, D)")
    intervals, failed = bootstrap(_fit_all, runs, n_boot=n_boot, level=level, seed=seed)
    return FitResult("kaplan", point, intervals, level, n_boot, failed)
