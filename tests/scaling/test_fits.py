"""Fits recover known coefficients from synthetic noisy data, within their bootstrap intervals."""
import numpy as np
import pytest
from scipy.optimize import minimize

from gopher_jax.scaling import approach3 as a3
from gopher_jax.scaling import synthetic
from gopher_jax.scaling.approach1 import envelope, fit_approach1
from gopher_jax.scaling.approach2 import budget_groups, fit_approach2
from gopher_jax.scaling.kaplan import fit_kaplan, fit_l_of_x
from gopher_jax.scaling.laws import eq4_optimal, kaplan_loss_n
from gopher_jax.scaling.lbfgs import batched_lbfgs
from gopher_jax.scaling.runs import make_runs

LAW = synthetic.PUBLISHED
TRUE_A = LAW["beta"] / (LAW["alpha"] + LAW["beta"])  # 0.4516
TRUE_B = LAW["alpha"] / (LAW["alpha"] + LAW["beta"])


def inside(interval, value):
    lo, hi = interval
    return lo <= value <= hi


def test_approach3_recovers_published_law():
    runs = synthetic.isoflop_runs(noise=0.005, seed=1)
    fit = a3.fit_approach3(runs, n_boot=40, level=0.95, seed=0)
    for k in ("E", "A", "B", "alpha", "beta"):
        assert inside(fit.intervals[k], LAW[k]), (k, fit.params[k], fit.intervals[k])
    assert fit.params["alpha"] == pytest.approx(0.34, abs=0.02)
    assert fit.params["beta"] == pytest.approx(0.28, abs=0.02)
    assert fit.params["E"] == pytest.approx(1.69, abs=0.05)
    assert inside(fit.intervals["a"], TRUE_A)
    js = fit.to_json()
    assert {"E", "A", "B", "alpha", "beta"} <= set(js) and set(js["intervals"]) >= {"E", "A", "B", "alpha", "beta"}


def test_approach3_noise_free_is_exact():
    runs = synthetic.isoflop_runs(noise=0.0, budgets=(1e18, 1e19, 1e20, 1e21), sizes_per_budget=6)
    theta, value = a3.fit_theta(runs, top_k=32)
    p = a3.theta_to_params(theta)
    for k in ("E", "A", "B", "alpha", "beta"):
        assert p[k] == pytest.approx(LAW[k], rel=1e-3), k
    assert value < 1e-6


def test_huber_and_gradient():
    assert a3.huber(np.array([0.0005, -0.002]), 1e-3).tolist() == pytest.approx([0.5 * 0.0005 ** 2, 1e-3 * 0.0015])
    runs = synthetic.isoflop_runs(seed=3)
    logN, logD, logL = np.log(runs.N), np.log(runs.D), np.log(runs.loss)
    theta = np.array([[6.0, 6.0, 0.5, 0.3, 0.3]])
    w = np.ones((1, len(runs)))
    f, g = a3.weighted_value_and_grad(theta, w, logN, logD, logL, 1e-3)
    assert f[0] == pytest.approx(a3.objective(theta[0], logN, logD, logL))
    eps = 1e-6
    numeric = [(a3.objective(theta[0] + eps * e, logN, logD, logL) - a3.objective(theta[0] - eps * e, logN, logD, logL))
               / (2 * eps) for e in np.eye(5)]
    assert g[0] == pytest.approx(numeric, rel=1e-4, abs=1e-6)
    assert a3.paper_grid().shape == (4500, 5)


def test_batched_lbfgs_matches_scipy_on_rosenbrock():
    def rosen(x):
        f = (1 - x[:, 0]) ** 2 + 100 * (x[:, 1] - x[:, 0] ** 2) ** 2
        g = np.stack([-2 * (1 - x[:, 0]) - 400 * x[:, 0] * (x[:, 1] - x[:, 0] ** 2), 200 * (x[:, 1] - x[:, 0] ** 2)], 1)
        return f, g

    starts = np.array([[-1.2, 1.0], [2.0, 2.0], [0.0, 0.0]])
    x, f, ok = batched_lbfgs(lambda x, rows: rosen(x), starts, max_iter=2000)
    assert ok.all()
    np.testing.assert_allclose(x, 1.0, atol=1e-5)
    ref = minimize(lambda z: rosen(z[None])[0][0], starts[0], jac=lambda z: rosen(z[None])[1][0], method="L-BFGS-B")
    np.testing.assert_allclose(x[0], ref.x, atol=1e-4)


def test_approach2_recovers_exponents_and_vertices():
    runs = synthetic.isoflop_runs(noise=0.005, seed=2)
    assert len(budget_groups(runs)) == 7
    fit = fit_approach2(runs, n_boot=60, level=0.95)
    assert inside(fit.intervals["a"], TRUE_A) and inside(fit.intervals["b"], TRUE_B)
    assert fit.params["a"] == pytest.approx(TRUE_A, abs=0.03)
    assert fit.params["a"] + fit.params["b"] == pytest.approx(1.0, abs=1e-9)  # D = C / 6N at every budget
    # The parabola vertex sits near the law's optimum at every budget (log-parabola is an approximation).
    for b in fit.extra["budgets"]:
        n_true = eq4_optimal(b["C"], **LAW)[0]
        assert b["N_opt"] == pytest.approx(n_true, rel=0.25)


def test_approach2_huber_fit_shrugs_off_one_diverged_run():
    """One run per budget reports a loss 15% too high (a diverged or mis-scheduled run): the Huber
    parabolas keep every vertex near the clean one and flag that run; least squares moves them."""
    runs = synthetic.isoflop_runs(noise=0.002, seed=3)
    clean = fit_approach2(runs, n_boot=0).extra["budgets"]
    bad = runs.loss.copy()
    for g in budget_groups(runs):
        bad[g[2]] *= 1.15  # the third-smallest size, left of each vertex
    broken = make_runs(runs.N, runs.D, bad, runs.C)
    robust = fit_approach2(broken, n_boot=0).extra["budgets"]
    plain = fit_approach2(broken, n_boot=0, robust=False).extra["budgets"]
    for c, r, p, g in zip(clean, robust, plain, budget_groups(runs)):
        assert r["N_opt"] == pytest.approx(c["N_opt"], rel=0.03)
        assert float(runs.N[g][2]) in r["downweighted"]
        assert abs(np.log(p["N_opt"] / c["N_opt"])) > 3 * abs(np.log(r["N_opt"] / c["N_opt"]))


def test_approach2_rejects_a_concave_budget():
    runs = make_runs([1e8, 2e8, 4e8, 1e8, 2e8, 4e8], [1e9] * 3 + [1e10] * 3, [3.0, 2.5, 3.0, 2.5, 2.7, 2.5],
                     C=[6e17] * 3 + [6e18] * 3)
    with pytest.raises(ValueError, match="curves downward"):
        fit_approach2(runs, n_boot=0)


def test_approach1_envelope_recovers_exponent():
    curves = synthetic.training_curves(noise=0.003, seed=0)
    env = envelope(curves)
    assert len(np.unique(env["N"])) >= 4  # the frontier passes through several model sizes
    fit = fit_approach1(curves, n_boot=30, level=0.95)
    # A staircase through 7 sizes estimates a with ~0.03 resolution; the interval must cover the truth.
    assert inside(fit.intervals["a"], TRUE_A), (fit.params, fit.intervals)
    assert fit.params["a"] == pytest.approx(TRUE_A, abs=0.03)


def test_approach1_needs_curves():
    with pytest.raises(ValueError, match=">= 2 runs"):
        envelope(make_runs([1e8, 1e8], [1e9, 2e9], [3.0, 2.9], run=["a", "a"]))


def test_kaplan_l_of_n_and_l_of_nd():
    rng = np.random.default_rng(0)
    N = np.geomspace(1e6, 1e10, 12)
    loss = kaplan_loss_n(N, 8.8e13, 0.076) * np.exp(0.002 * rng.standard_normal(12))
    alpha, n_c = fit_l_of_x(N, loss)
    assert alpha == pytest.approx(0.076, abs=0.005)
    assert np.log10(n_c) == pytest.approx(np.log10(8.8e13), abs=0.5)
    fit = fit_kaplan(synthetic.kaplan_runs(noise=0.003, seed=0), n_boot=30, level=0.95)
    truth = {"N_c": 6.4e13, "D_c": 1.8e13, "alpha_N": 0.076, "alpha_D": 0.103}
    for k, v in truth.items():
        assert inside(fit.intervals[f"L(N,D).{k}"], v), (k, fit.params, fit.intervals)


def test_degenerate_results_are_flagged_and_json_safe():
    # the vertex of a budget whose loss still falls at the smallest size lies outside the sizes trained
    N = np.array([1e6, 2e6, 4e6])
    runs = make_runs(np.tile(N, 2), np.concatenate([1e9 / N, 1e10 / N]), [3.0, 3.1, 3.3, 2.8, 2.85, 3.0],
                     C=[6e15] * 3 + [6e16] * 3)
    fit = fit_approach2(runs, n_boot=0)
    assert any(b["extrapolated"] for b in fit.extra["budgets"])
    p = a3.theta_to_params(np.array([900.0, 5.0, 0.5, 0.3, 0.3]))  # A = e^900 overflows
    assert p["A"] == float("inf") and np.isnan(p["a"])
    js = a3.FitResult("3", p, {"A": (1.0, float("inf"))}).to_json()
    assert js["A"] is None and js["intervals"]["A"] == [1.0, None]


def test_kaplan_skips_the_parts_the_data_cannot_support():
    # loss rises with N (data-limited tiny runs): L(N) is skipped and named, L(D) still fits
    runs = make_runs([1e5, 2e5, 4e5, 1e5, 2e5, 4e5], [1e5, 1e5, 1e5, 1e6, 1e6, 1e6], [6.9, 7.0, 7.2, 6.1, 6.2, 6.4])
    fit = fit_kaplan(runs, n_boot=10)
    assert "L(N)" in fit.extra["skipped"] and "slope" in fit.extra["skipped"]["L(N)"]
    assert "L(D).alpha_D" in fit.params and "L(N).alpha_N" not in fit.params
