"""Chinchilla approach 3: fit L(N, D) = E + A/N^alpha + B/D^beta (Sec. 3.3, App. D.2).

The paper minimises sum_i Huber_delta(LSE(a - alpha log N_i, b - beta log D_i, e) - log L_i) with
A = e^a, B = e^b, E = e^e, delta = 1e-3, by L-BFGS from a grid of initialisations
(alpha, beta in {0, .5, .., 2}, e in {-1, -.5, .., 1}, a, b in {0, 5, .., 25}: 4,500 starts).

Speed: the objective is evaluated at all 4,500 grid points in one vectorised pass, and L-BFGS
runs only from the `top_k` best of them (default 256), all together in a batched numpy L-BFGS
(`lbfgs.py`); the winner is polished by scipy's L-BFGS-B. Starts far down the ranking (e.g.
alpha = 0 with a = 25) sit on plateaus and converge to worse local minima or not at all, so they
cost time without changing the answer; `top_k=None` runs the full grid (29 s instead of 2.4 s on
63 runs, same optimum: benchmarks/scaling_fit_bench.py). Bootstrap resamples are expressed as row
weights (multinomial counts) and fitted all at once by the same batched L-BFGS, each from the
full-data optimum and the 4 best grid points. The objective is divided by delta, which leaves the
minimiser unchanged but keeps gradients O(1) for the tolerances.
"""
from __future__ import annotations

import itertools

import numpy as np
from scipy.optimize import minimize
from scipy.special import logsumexp, softmax

from gopher_jax.scaling import constants as K
from gopher_jax.scaling.bootstrap import DEFAULT_LEVEL, FitResult, percentile_intervals
from gopher_jax.scaling.lbfgs import batched_lbfgs
from gopher_jax.scaling.runs import Runs

PARAMS = ("E", "A", "B", "alpha", "beta")
DEFAULT_TOP_K = 256  # L-BFGS starts kept from the ranked 4,500-point grid (None = all)


def paper_grid() -> np.ndarray:
    """Returns the paper's 4,500 initialisations as rows (a, b, e, alpha, beta)."""
    return np.array(list(itertools.product(K.GRID_A, K.GRID_B, K.GRID_E, K.GRID_ALPHA, K.GRID_BETA)))


def _logits(theta: np.ndarray, logN: np.ndarray, logD: np.ndarray) -> np.ndarray:
    # theta [..., 5] -> [..., n, 3] terms of the LSE.
    a, b, e, al, be = (theta[..., i, None] for i in range(5))
    return np.stack([a - al * logN, b - be * logD, np.broadcast_to(e, (a - al * logN).shape)], axis=-1)


def huber(r: np.ndarray, delta: float) -> np.ndarray:
    """Returns the Huber loss of residuals r (quadratic inside |r| <= delta, linear outside)."""
    ar = np.abs(r)
    return np.where(ar <= delta, 0.5 * r * r, delta * (ar - 0.5 * delta))


def objective(theta, logN, logD, logL, delta: float = K.HUBER_DELTA):
    """Returns sum of Huber(LSE - log L) / delta for theta [..., 5] (vectorised over leading axes)."""
    r = logsumexp(_logits(np.asarray(theta), logN, logD), axis=-1) - logL
    return huber(r, delta).sum(-1) / delta


def weighted_value_and_grad(theta, weights, logN, logD, logL, delta):
    """Returns (objective [S], gradient [S, 5]) for thetas [S, 5] with row weights [S, n]."""
    t = _logits(theta, logN, logD)
    r = logsumexp(t, axis=-1) - logL
    dr = weights * np.clip(r, -delta, delta) / delta  # d Huber / d r, divided by delta
    w = softmax(t, axis=-1) * dr[..., None]
    grad = np.stack([w[..., 0].sum(-1), w[..., 1].sum(-1), w[..., 2].sum(-1),
                     -(w[..., 0] * logN).sum(-1), -(w[..., 1] * logD).sum(-1)], axis=-1)
    return (weights * huber(r, delta)).sum(-1) / delta, grad


def _minimise(starts, weights, logN, logD, logL, delta):
    def fg(x, rows):
        return weighted_value_and_grad(x, weights[rows], logN, logD, logL, delta)
    return batched_lbfgs(fg, starts)


def _polish(theta0, logN, logD, logL, delta):
    one = np.ones((1, len(logN)))

    def fg(th):
        f, g = weighted_value_and_grad(th[None], one, logN, logD, logL, delta)
        return float(f[0]), g[0]
    res = minimize(fg, theta0, jac=True, method="L-BFGS-B", options={"maxiter": 2000, "ftol": 1e-15, "gtol": 1e-10})
    return res.x, float(res.fun)


def fit_theta(runs: Runs, *, top_k: int | None = DEFAULT_TOP_K, starts: np.ndarray | None = None,
              delta: float = K.HUBER_DELTA) -> tuple[np.ndarray, float]:
    """Returns the best (a, b, e, alpha, beta) and its objective: batched L-BFGS from the grid
    (or the `top_k` best grid points, or explicit `starts`), then a scipy L-BFGS-B polish."""
    if len(runs) < 5:
        raise ValueError(f"approach 3 fits 5 parameters and needs >= 5 runs; got {len(runs)}")
    logN, logD, logL = np.log(runs.N), np.log(runs.D), np.log(runs.loss)
    grid = paper_grid() if starts is None else np.asarray(starts, np.float64).reshape(-1, 5)
    if top_k is not None and top_k < len(grid):
        grid = grid[np.argsort(objective(grid, logN, logD, logL, delta))[:top_k]]
    x, f, _ = _minimise(grid, np.ones((len(grid), len(runs))), logN, logD, logL, delta)
    f = np.where(np.isfinite(f), f, np.inf)
    theta, value = _polish(x[np.argmin(f)], logN, logD, logL, delta)
    if not (np.all(np.isfinite(theta)) and np.isfinite(value)):
        raise ValueError("approach 3: L-BFGS diverged from every start; check the runs for outliers")
    return theta, value


def theta_to_params(theta: np.ndarray) -> dict[str, float]:
    """Returns E, A, B, alpha, beta and the Eq. 4 exponents a, b and G from an LSE theta."""
    a, b, e, al, be = (float(x) for x in theta)
    with np.errstate(over="ignore"):  # a degenerate fit (a term the data cannot see) may overflow: inf
        A, B, E = float(np.exp(a)), float(np.exp(b)), float(np.exp(e))
    out = {"E": E, "A": A, "B": B, "alpha": al, "beta": be}
    if al > 0 and be > 0 and np.isfinite(A) and np.isfinite(B):
        out.update(a=be / (al + be), b=al / (al + be), G=(al * A / (be * B)) ** (1 / (al + be)))
    else:  # Eq. 4 needs positive exponents; report NaN rather than a meaningless allocation
        out.update(a=float("nan"), b=float("nan"), G=float("nan"))
    return out


def bootstrap_thetas(runs: Runs, theta: np.ndarray, *, n_boot: int, seed: int = 0, n_grid: int = 4,
                     delta: float = K.HUBER_DELTA) -> np.ndarray:
    """Returns [n_boot, 5] thetas fitted to row-resampled data (multinomial weights), all batched."""
    logN, logD, logL = np.log(runs.N), np.log(runs.D), np.log(runs.loss)
    n = len(runs)
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)
    grid = paper_grid()
    starts = np.vstack([theta, grid[np.argsort(objective(grid, logN, logD, logL, delta))[:n_grid]]])
    S = len(starts)
    x, f, _ = _minimise(np.tile(starts, (n_boot, 1)), np.repeat(weights, S, axis=0), logN, logD, logL, delta)
    f = np.where(np.isfinite(f), f, np.inf).reshape(n_boot, S)
    return x.reshape(n_boot, S, 5)[np.arange(n_boot), np.argmin(f, axis=1)]


def fit_approach3(runs: Runs, *, n_boot: int = 200, level: float = DEFAULT_LEVEL, seed: int = 0,
                  top_k: int | None = DEFAULT_TOP_K, delta: float = K.HUBER_DELTA) -> FitResult:
    """Returns the approach-3 fit: E, A, B, alpha, beta, a, b, G with bootstrap percentile intervals."""
    theta, value = fit_theta(runs, top_k=top_k, delta=delta)
    intervals: dict[str, tuple[float, float]] = {}
    failed = 0
    if n_boot > 0:
        if not 0 < level < 1:
            raise ValueError(f"interval level={level} must be in (0, 1), e.g. 0.8 for 10th-90th percentiles")
        samples = [theta_to_params(t) for t in bootstrap_thetas(runs, theta, n_boot=n_boot, seed=seed, delta=delta)]
        good = [s for s in samples if all(np.isfinite(v) for v in s.values())]
        failed = len(samples) - len(good)
        intervals = percentile_intervals(good, n_boot, level)
    return FitResult("3", theta_to_params(theta), intervals, level, n_boot, failed,
                     extra={"huber_objective": value, "huber_delta": delta, "n_runs": len(runs),
                            "starts": len(paper_grid()) if top_k is None else top_k})
