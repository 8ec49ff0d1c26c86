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
        with np.errstate(over="ignore", invalid="ignore"):  # trial steps far from the data may overflow
            r = np.log(kaplan_loss_nd(runs.N, runs.D, np.exp(lnc), np.exp(ldc), an, ad)) - logL
        return np.where(np.isfinite(r), r, 1e3)

    best = None
    for p0 in ([np.log(K.KAPLAN_ND_N_C), np.log(K.KAPLAN_ND_D_C), K.KAPLAN_ND_ALPHA_N, K.KAPLAN_ND_ALPHA_D],
               [logN.max() + 5, logD.max() + 5, 0.1, 0.1], [logN.mean(), logD.mean(), 0.3, 0.3]):
        r = least_squares(resid, p0, bounds=([-np.inf, -np.inf, 1e-4, 1e-4], [np.inf, np.inf, 5, 5]),
                          x_scale=[1, 1, 0.05, 0.05], xtol=1e-12, ftol=1e-12)
        if best is None or r.cost < best.cost:
            best = r
    lnc, ldc, an, ad = best.x
    return {"N_c": float(np.exp(lnc)), "D_c": float(np.exp(ldc)), "alpha_N": float(an), "alpha_D": float(ad)}


PARTS = ("L(N)", "L(D)", "L(N,D)")


def _fit_part(part: str, runs: Runs) -> dict[str, float]:
    if part == "L(N)":
        n, ln = lowest_per_value(runs.N, runs.loss)
        if len(n) < 2:
            raise ValueError("L(N) needs >= 2 distinct model sizes")
        alpha, n_c = fit_l_of_x(n, ln)
        return {"L(N).alpha_N": alpha, "L(N).N_c": n_c}
    if part == "L(D)":
        d, ld = lowest_per_value(runs.D, runs.loss)
        if len(d) < 2:
            raise ValueError("L(D) needs >= 2 distinct token counts")
        alpha, d_c = fit_l_of_x(d, ld)
        return {"L(D).alpha_D": alpha, "L(D).D_c": d_c}
    if len(runs) < 5:
        raise ValueError("L(N, D) fits 4 parameters and needs >= 5 runs")
    return {f"L(N,D).{k}": v for k, v in fit_l_nd(runs).items()}


def fit_kaplan(runs: Runs, *, n_boot: int = 200, level: float = DEFAULT_LEVEL, seed: int = 0) -> FitResult:
    """Returns Kaplan L(N), L(D) and L(N, D) parameters (keys 'L(N).alpha_N', ...) with intervals.

    Parts the data cannot support (e.g. loss not falling with N) are left out and named in
    extra['skipped']; a resample where a kept part fails counts as failed."""
    point, skipped = {}, {}
    for part in PARTS:
        try:
            point.update(_fit_part(part, runs))
        except ValueError as e:
            skipped[part] = str(e)
    if not point:
        raise ValueError("no Kaplan law fits these runs: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    kept = [p for p in PARTS if p not in skipped]

    def fit_all(r: Runs) -> dict[str, float]:
        out = {}
        for part in kept:
            out.update(_fit_part(part, r))
        return out

    intervals, failed = bootstrap(fit_all, runs, n_boot=n_boot, level=level, seed=seed)
    return FitResult("kaplan", point, intervals, level, n_boot, failed, extra={"skipped": skipped})
