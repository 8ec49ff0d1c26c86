"""Outlier-robust polynomial fits (Huber M-estimation by iteratively reweighted least squares).

Approaches 1 and 2 fit low-degree polynomials to few points: a parabola through 5-7 runs of one
FLOP budget, a line through 3-5 budget vertices. One diverged or mis-scheduled run moves a
least-squares parabola's vertex, and with it the exponent. Approach 3 already fits with Chinchilla's
Huber loss (App. D.2); these fits use the same idea: residuals beyond HUBER_K robust standard
deviations get weight HUBER_K * s / |r| instead of 1 (Huber 1964; k = 1.345 gives 95% efficiency on
Gaussian noise). The scale s is the median absolute residual / 0.6745 (the MAD estimate of a
Gaussian sigma), floored so that near-perfect data (synthetic tests, exact power laws) fall back to
ordinary least squares instead of dividing by zero. With fewer than MIN_POINTS_PER_COEFFICIENT points
per coefficient (a line through 3 budget vertices, a parabola through 5 runs) the residuals say
too little about which point is the outlier (each point pulls the fit toward itself), so the fit
is ordinary least squares. numpy's polyfit does the weighted solves; no
library here provides a weighted-Huber polyfit (statsmodels' RLM would, as a new dependency).
"""
from __future__ import annotations

import numpy as np

HUBER_K = 1.345
MAD_TO_SIGMA = 0.6745
MAX_ITERATIONS = 50
MIN_POINTS_PER_COEFFICIENT = 2


def huber_polyfit(x, y, deg: int, *, k: float = HUBER_K, min_scale: float = 1e-9) -> tuple[np.ndarray, np.ndarray]:
    """Returns (coefficients highest power first, as np.polyfit, final weights per point) of a Huber fit."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    w = np.ones_like(y)
    coef = np.polyfit(x, y, deg)
    if len(x) < MIN_POINTS_PER_COEFFICIENT * (deg + 1):
        return coef, w
    for _ in range(MAX_ITERATIONS):
        r = y - np.polyval(coef, x)
        s = max(np.median(np.abs(r)) / MAD_TO_SIGMA, min_scale * max(1.0, float(np.median(np.abs(y)))))
        a = np.abs(r) / s
        w_new = np.where(a <= k, 1.0, k / np.maximum(a, 1e-300))
        # np.polyfit's weights multiply residuals, so pass sqrt of the IRLS weights
        coef_new = np.polyfit(x, y, deg, w=np.sqrt(w_new))
        done = np.allclose(coef_new, coef, rtol=1e-10, atol=1e-12)
        coef, w = coef_new, w_new
        if done:
            break
    return coef, w
