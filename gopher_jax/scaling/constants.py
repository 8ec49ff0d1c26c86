"""Every number the scaling toolkit takes from a paper, named, with its source.

Papers: Kaplan = Kaplan et al. 2020, "Scaling Laws for Neural Language Models";
Chinchilla = Hoffmann et al. 2022, "Training Compute-Optimal Large Language Models";
Gopher = Rae et al. 2021, "Scaling Language Models: Methods, Analysis & Insights from Training Gopher".
Each value names the paper and the table, equation, figure or section it is taken from.
"""
from __future__ import annotations

# ---------------------------------------------------------------- Kaplan et al. 2020
# Eq. 1.1 / Sec. 1.2: L(N) = (N_c / N)^alpha_N, N = non-embedding parameters, loss in nats/token.
KAPLAN_ALPHA_N = 0.076
KAPLAN_N_C = 8.8e13
# Eq. 1.2: L(D) = (D_c / D)^alpha_D, D = tokens.
KAPLAN_ALPHA_D = 0.095
KAPLAN_D_C = 5.4e13
# Eq. 1.3: L(C_min) = (C_c / C_min)^alpha_C, C in PF-days.
KAPLAN_ALPHA_C = 0.050
KAPLAN_C_C_PF_DAYS = 3.1e8
# Eq. 1.5: L(N, D) = [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D, with the joint fit's own constants
# from Kaplan Table 2 (alpha_N 0.076, alpha_D 0.103, N_c 6.4e13, D_c 1.8e13).
KAPLAN_ND_ALPHA_N = 0.076
KAPLAN_ND_ALPHA_D = 0.103
KAPLAN_ND_N_C = 6.4e13
KAPLAN_ND_D_C = 1.8e13
# Critical batch size B_crit = B* / L^(1/alpha_B) (Eq. 1.4).
KAPLAN_B_STAR = 2.1e8
KAPLAN_ALPHA_B = 0.21
# Compute-efficient allocation, N_opt proportional to C^0.73 and D_opt to C^0.27 (Chinchilla Table 2,
# "Kaplan" row; Kaplan Eq. 1.7). The prefactor, N_opt = 1.3e9 * (C_min / PF-day)^0.73, is Kaplan Sec. 6.1
# (Eq. 6.1, Fig. 14).
KAPLAN_A = 0.73
KAPLAN_B = 0.27
KAPLAN_N_OPT_PREFACTOR = 1.3e9  # parameters at C_min = 1 PF-day (Kaplan Sec. 6.1, Eq. 6.1)
PF_DAY = 1e15 * 24 * 3600  # FLOPs in one petaflop/s-day = 8.64e19

# ---------------------------------------------------------------- Chinchilla (Hoffmann et al. 2022)
# Approach 3 (Sec. 3.3, Eq. 2 and the text under it): L(N, D) = E + A / N^alpha + B / D^beta.
CHINCHILLA_E = 1.69
CHINCHILLA_A = 406.4
CHINCHILLA_B = 410.7
CHINCHILLA_ALPHA = 0.34
CHINCHILLA_BETA = 0.28
# Fitting recipe of approach 3 (Sec. 3.3 and App. D.2): Huber loss with delta = 1e-3 on
# log-space residuals, L-BFGS from a grid of initialisations.
HUBER_DELTA = 1e-3
GRID_ALPHA = (0.0, 0.5, 1.0, 1.5, 2.0)
GRID_BETA = (0.0, 0.5, 1.0, 1.5, 2.0)
GRID_E = (-1.0, -0.5, 0.0, 0.5, 1.0)
GRID_A = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0)
GRID_B = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0)

# Table 2: exponents a (N_opt ~ C^a) and b (D_opt ~ C^b) per approach.
CHINCHILLA_EXPONENTS = {
    "1": (0.50, 0.50),
    "2": (0.49, 0.51),
    "3": (0.46, 0.54),
    "kaplan": (KAPLAN_A, KAPLAN_B),
}

# Gopher's training budget, the compute of Table 3's "1 Gopher" row (Chinchilla Table 3).
GOPHER_FLOPS = 5.76e23

# Table 3: approach-1 projections: (parameters, FLOPs, tokens).
TABLE3 = (
    (400e6, 1.92e19, 8.0e9),
    (1e9, 1.21e20, 20.2e9),
    (10e9, 1.23e22, 205.1e9),
    (67e9, 5.76e23, 1.5e12),
    (175e9, 3.85e24, 3.7e12),
    (280e9, 9.90e24, 5.9e12),
    (520e9, 3.43e25, 11.0e12),
    (1e12, 1.27e26, 21.2e12),
    (10e12, 1.30e28, 216.2e12),
)
# The 67B row is not consistent with C = 6ND: 6 * 67e9 * 1.5e12 = 6.03e23, 4.7% above its FLOPs
# column; every other row agrees with 6ND within 1%. It is left out of the prefactor fit below.
TABLE3_INCONSISTENT_ROW = 3

# Approach-1 prefactors are not printed in the paper; these come from a least-squares line in
# log-log space through Table 3's (FLOPs, parameters) without its 67B row, with D = C / (6N) as in
# the table's FLOPs column (see `optimal.table3_power_laws`, checked by tests/scaling/test_optimal.py):
# N_opt = K_N * C^a, D_opt = C^(1-a) / (6 K_N).
APPROACH1_A = 0.4980916
APPROACH1_K_N = 0.09934867

# Approach 2: exponents from Table 2; the prefactor anchors N_opt at Gopher's budget to the
# 63B parameters that Chinchilla Fig. 3 (right panel) projects for it.
APPROACH2_N_AT_GOPHER = 63e9

# Chinchilla's own size and data (Sec. 4.1): 70B parameters on 1.4T tokens.
CHINCHILLA_PARAMS = 70e9
CHINCHILLA_TOKENS = 1.4e12
GOPHER_PARAMS = 280e9
GOPHER_TOKENS = 300e9

# App. F: the backward pass costs twice the forward pass.
BACKWARD_FORWARD_RATIO = 2.0
# App. F counts a softmax as 3 FLOPs per score (exp, sum, divide).
SOFTMAX_FLOPS_PER_SCORE = 3
