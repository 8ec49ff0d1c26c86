"""Power laws y = k * x^p fitted as straight lines in log-log space (approaches 1, 2, Kaplan)."""
from __future__ import annotations

import numpy as np


def fit_power_law(x, y, robust: bool = False) -> tuple[float, float]:
    """Returns (exponent p, prefactor k) of the line log y = p log x + log k: least squares, or with
    `robust` a Huber fit (gopher_jax/scaling/robust.py) that down-weights outlying points."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) < 2 or np.ptp(np.log(x)) == 0:
        raise ValueError(f"a power law needs points at >= 2 distinct x values; got x={x.tolist()}")
    if robust:
        from gopher_jax.scaling.robust import huber_polyfit
        p, logk = huber_polyfit(np.log(x), np.log(y), 1)[0]
    else:
        p, logk = np.polyfit(np.log(x), np.log(y), 1)
    return float(p), float(np.exp(logk))


def power_law(x, exponent: float, prefactor: float):
    """Returns prefactor * x^exponent."""
    return prefactor * np.asarray(x, np.float64) ** exponent


def anchored_prefactor(exponent: float, x0: float, y0: float) -> float:
    """Returns k such that k * x0^exponent = y0 (a published exponent through a published point)."""
    return float(y0 / x0 ** exponent)
