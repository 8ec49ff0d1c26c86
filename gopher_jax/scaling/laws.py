"""The functional forms of the scaling laws (loss in nats per token)."""
from __future__ import annotations

import numpy as np


def chinchilla_loss(N, D, E: float, A: float, B: float, alpha: float, beta: float):
    """Returns Chinchilla Eq. 2: E + A / N^alpha + B / D^beta."""
    N, D = np.asarray(N, np.float64), np.asarray(D, np.float64)
    return E + A / N ** alpha + B / D ** beta


def kaplan_loss_n(N, N_c: float, alpha_N: float):
    """Returns Kaplan Eq. 1.1: (N_c / N)^alpha_N."""
    return (N_c / np.asarray(N, np.float64)) ** alpha_N


def kaplan_loss_d(D, D_c: float, alpha_D: float):
    """Returns Kaplan Eq. 1.2: (D_c / D)^alpha_D."""
    return (D_c / np.asarray(D, np.float64)) ** alpha_D


def kaplan_loss_nd(N, D, N_c: float, D_c: float, alpha_N: float, alpha_D: float):
    """Returns Kaplan Eq. 1.5: [(N_c / N)^(alpha_N / alpha_D) + D_c / D]^alpha_D."""
    N, D = np.asarray(N, np.float64), np.asarray(D, np.float64)
    return ((N_c / N) ** (alpha_N / alpha_D) + D_c / D) ** alpha_D


def eq4_optimal(C, E: float, A: float, B: float, alpha: float, beta: float) -> tuple:
    """Returns (N_opt, D_opt) minimising Eq. 2 under C = 6ND: Chinchilla Eq. 4,
    N_opt = G (C/6)^a, D_opt = G^-1 (C/6)^b, G = (alpha A / (beta B))^(1/(alpha+beta)),
    a = beta / (alpha+beta), b = alpha / (alpha+beta). (E does not move the optimum.)"""
    C = np.asarray(C, np.float64)
    G = (alpha * A / (beta * B)) ** (1.0 / (alpha + beta))
    a, b = beta / (alpha + beta), alpha / (alpha + beta)
    return G * (C / 6.0) ** a, (C / 6.0) ** b / G
