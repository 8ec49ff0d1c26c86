"""The planner reproduces Chinchilla's Eq. 4 and Table 3 from published coefficients."""
import math

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from gopher_jax.scaling import constants as K
from gopher_jax.scaling.laws import chinchilla_loss, eq4_optimal
from gopher_jax.scaling.optimal import laws_from_fit, optimal, plan, published, table3_power_laws

PUB3 = dict(E=K.CHINCHILLA_E, A=K.CHINCHILLA_A, B=K.CHINCHILLA_B, alpha=K.CHINCHILLA_ALPHA, beta=K.CHINCHILLA_BETA)

# The papers' numbers, typed in here from the papers' tables (Chinchilla Tables 2-3), not from constants.py:
# the tests below check constants.py and the planner against them.
# Chinchilla Table 3 (approach-1 projections): parameters, FLOPs, tokens.
PAPER_TABLE3 = ((400e6, 1.92e19, 8.0e9), (1e9, 1.21e20, 20.2e9), (10e9, 1.23e22, 205.1e9),
                (67e9, 5.76e23, 1.5e12), (175e9, 3.85e24, 3.7e12), (280e9, 9.90e24, 5.9e12),
                (520e9, 3.43e25, 11.0e12), (1e12, 1.27e26, 21.2e12), (10e12, 1.30e28, 216.2e12))
PAPER_TABLE3_67B_ROW = 3  # 6 * 67e9 * 1.5e12 = 6.03e23, 4.7% above the row's 5.76e23
# Chinchilla Table 2: (a, b) of N_opt ~ C^a, D_opt ~ C^b; Kaplan's row 0.73 / 0.27.
PAPER_TABLE2 = {"1": (0.50, 0.50), "2": (0.49, 0.51), "3": (0.46, 0.54), "kaplan": (0.73, 0.27)}
# Chinchilla Sec. 3.3 / Eq. 4: the approach-3 fit.
PAPER_APPROACH3 = dict(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)


def test_constants_are_the_papers():
    assert K.TABLE3 == PAPER_TABLE3 and K.TABLE3_INCONSISTENT_ROW == PAPER_TABLE3_67B_ROW
    assert K.CHINCHILLA_EXPONENTS == PAPER_TABLE2
    assert PUB3 == PAPER_APPROACH3
    assert K.GOPHER_FLOPS == PAPER_TABLE3[PAPER_TABLE3_67B_ROW][1]


PRINTED = {  # Table 3 exactly as printed, to know each value's last digit
    400e6: "400M", 1e9: "1B", 10e9: "10B", 67e9: "67B", 175e9: "175B", 280e9: "280B", 520e9: "520B", 1e12: "1T",
    10e12: "10T", 8.0e9: "8.0B", 20.2e9: "20.2B", 205.1e9: "205.1B", 1.5e12: "1.5T", 3.7e12: "3.7T",
    5.9e12: "5.9T", 11.0e12: "11.0T", 21.2e12: "21.2T", 216.2e12: "216.2T"}


def rounding_interval(value: float) -> tuple[float, float]:
    """Returns the values that print as Table 3 prints `value` (e.g. 205.1B -> [205.05B, 205.15B])."""
    text = PRINTED[value]
    unit = {"M": 1e6, "B": 1e9, "T": 1e12}[text[-1]]
    decimals = len(text[:-1].split(".")[1]) if "." in text else 0
    half = 0.5 * 10 ** -decimals * unit
    return value - half, value + half


def flops_interval(c: float) -> tuple[float, float]:
    """FLOPs are printed with 3 significant figures (1.92e19)."""
    half = 0.005 * 10 ** math.floor(math.log10(c))
    return c - half, c + half


@pytest.mark.parametrize("row", [i for i in range(len(PAPER_TABLE3)) if i != PAPER_TABLE3_67B_ROW])
def test_table3_rows_within_rounding(row):
    # Within rounding = some budget that prints as the row's FLOPs gives N and D that print as the row's.
    n_tab, c_tab, d_tab = PAPER_TABLE3[row]
    law = published()["1"]
    budgets = np.linspace(*flops_interval(c_tab), 4001)
    n, d = (np.array(x) for x in zip(*(optimal(c, law) for c in budgets)))
    (n_lo, n_hi), (d_lo, d_hi) = rounding_interval(n_tab), rounding_interval(d_tab)
    assert np.any((n >= n_lo) & (n <= n_hi) & (d >= d_lo) & (d <= d_hi)), (optimal(c_tab, law), n_tab, d_tab)
    n_mid, d_mid = optimal(c_tab, law)  # and at the printed budget itself, within 1.5%
    assert n_mid == pytest.approx(n_tab, rel=0.015) and d_mid == pytest.approx(d_tab, rel=0.015)


def test_table3_gopher_row():
    # 67B / 1.5T at 5.76e23: 6 * 67e9 * 1.5e12 = 6.03e23, 4.7% above 5.76e23, so no law with C = 6ND
    # reproduces both numbers. We get 67.9B (rounds to 68B) and 1.42T (1.4T): N within 1.5%, D within 6%.
    result = plan(K.GOPHER_FLOPS, approaches=("1",))["1"]
    assert result["N"] == pytest.approx(67e9, rel=0.015)
    assert result["D"] == pytest.approx(1.5e12, rel=0.06)
    assert 6 * result["N"] * result["D"] == pytest.approx(K.GOPHER_FLOPS, rel=0.01)
    assert 6 * 67e9 * 1.5e12 / K.GOPHER_FLOPS == pytest.approx(1.047, abs=0.001)
    assert result["nearest_config"]["gin_file"] == "gin_configs/models/chinchilla_70b.gin"


def test_approach1_constants_are_a_line_through_the_papers_table3():
    # An independent least-squares line (numpy, not the package's fitter) through the printed rows
    # without the 67B row: log N = a log C + log k_N.
    rows = [r for i, r in enumerate(PAPER_TABLE3) if i != PAPER_TABLE3_67B_ROW]
    a, log_k = np.polyfit(np.log([c for _, c, _ in rows]), np.log([n for n, _, _ in rows]), 1)
    assert K.APPROACH1_A == pytest.approx(a, abs=1e-6)
    assert K.APPROACH1_K_N == pytest.approx(math.exp(log_k), rel=1e-5)
    assert table3_power_laws()["a"] == pytest.approx(a, abs=1e-9)
    # Table 2 rounds approach 1 to a = b = 0.50
    assert round(a, 2) == PAPER_TABLE2["1"][0] and round(1 - a, 2) == PAPER_TABLE2["1"][1]


@pytest.mark.parametrize("flops", [1e20, K.GOPHER_FLOPS, 1e26])
def test_eq4_closed_form_is_the_minimum(flops):
    n, d = eq4_optimal(flops, **PUB3)
    assert 6 * n * d == pytest.approx(flops, rel=1e-12)
    res = minimize_scalar(lambda x: chinchilla_loss(math.exp(x), flops / (6 * math.exp(x)), **PUB3),
                          bounds=(math.log(1e6), math.log(1e15)), method="bounded", options={"xatol": 1e-10})
    assert math.exp(res.x) == pytest.approx(n, rel=1e-4)
    # the written-out form: G = (alpha A / (beta B))^(1/(alpha+beta)), N = G (C/6)^a
    G = (0.34 * 406.4 / (0.28 * 410.7)) ** (1 / 0.62)
    assert n == pytest.approx(G * (flops / 6) ** (0.28 / 0.62), rel=1e-12)
    assert d == pytest.approx((flops / 6) ** (0.34 / 0.62) / G, rel=1e-12)


def test_plan_keys_and_published_numbers():
    result = plan(K.GOPHER_FLOPS)
    assert set(result) == {"1", "2", "3", "kaplan"}
    for entry in result.values():
        assert entry["N"] > 0 and entry["D"] > 0
        assert 6 * entry["N"] * entry["D"] == pytest.approx(K.GOPHER_FLOPS, rel=0.02)
    assert result["2"]["N"] == pytest.approx(63e9, rel=1e-9)
    # Eq. 4 with the rounded published coefficients gives 32B (the paper's figure quotes 40B from unrounded fits)
    assert result["3"]["N"] / 1e9 == pytest.approx(32.2, abs=0.1)
    assert result["3"]["a"] == pytest.approx(0.4516, abs=1e-4)
    assert result["kaplan"]["N"] > result["1"]["N"] > result["3"]["N"]


def test_plan_from_fit_file():
    fit = {"3": {"approach": "3", "E": 1.8, "A": 400.0, "B": 400.0, "alpha": 0.3, "beta": 0.3},
           "2": {"approach": "2", "a": 0.5, "b": 0.5, "k_N": 0.1, "k_D": 1 / 0.6}, "1": {"error": "no curves"}}
    result = plan(1e21, fit)
    assert result["3"]["source"] == "fitted" and result["1"]["source"] != "fitted"
    assert result["3"]["N"] == pytest.approx(result["3"]["D"], rel=1e-9)  # symmetric law: N = D
    assert result["2"]["N"] == pytest.approx(0.1 * 1e21 ** 0.5)
    single = laws_from_fit({"approach": "3", "E": 1.8, "A": 400.0, "B": 400.0, "alpha": 0.3, "beta": 0.3})
    assert set(single) == {"3"}
    with pytest.raises(ValueError, match="no usable approach"):
        laws_from_fit({"1": {"error": "x"}})
    with pytest.raises(ValueError, match="--flops=-1"):
        plan(-1)


def test_published_exponents_match_table2():
    pub = published()
    for name in ("1", "2", "kaplan"):
        a, b = PAPER_TABLE2[name]
        assert round(pub[name]["a"], 2) == a and round(pub[name]["b"], 2) == b
    # Approach 3's exponents from the rounded Sec. 3.3 coefficients: a = beta / (alpha + beta) = 0.4516;
    # Table 2 prints 0.46 / 0.54 from the unrounded fit.
    assert pub["3"]["beta"] / (pub["3"]["alpha"] + pub["3"]["beta"]) == pytest.approx(0.28 / 0.62)
    assert abs(0.28 / 0.62 - PAPER_TABLE2["3"][0]) < 0.01
    assert np.isclose(pub["kaplan"]["k_N"] * K.PF_DAY ** 0.73, 1.3e9)
