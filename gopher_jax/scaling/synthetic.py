"""Runs drawn from a known scaling law plus log-normal noise: for tests, docs and benchmarks."""
from __future__ import annotations

import numpy as np

from gopher_jax.scaling import constants as K
from gopher_jax.scaling.laws import chinchilla_loss, eq4_optimal, kaplan_loss_nd
from gopher_jax.scaling.runs import Runs, make_runs

PUBLISHED = dict(E=K.CHINCHILLA_E, A=K.CHINCHILLA_A, B=K.CHINCHILLA_B, alpha=K.CHINCHILLA_ALPHA,
                 beta=K.CHINCHILLA_BETA)


def isoflop_runs(budgets=(6e18, 1e19, 3e19, 6e19, 1e20, 3e20, 1e21), sizes_per_budget: int = 9,
                 span: float = 8.0, noise: float = 0.005, seed: int = 0, law: dict | None = None) -> Runs:
    """Returns IsoFLOP runs: per budget, `sizes_per_budget` N log-spaced over [N*/span, N*·span]
    around the law's optimum, D = C/(6N), loss = law(N, D) * exp(noise * standard normal)."""
    law = dict(PUBLISHED if law is None else law)
    rng = np.random.default_rng(seed)
    N, D, C = [], [], []
    for c in budgets:
        n_opt, _ = eq4_optimal(c, **law)
        for n in np.geomspace(n_opt / span, n_opt * span, sizes_per_budget):
            N.append(n), D.append(c / (6 * n)), C.append(c)
    N, D, C = map(np.array, (N, D, C))
    loss = chinchilla_loss(N, D, **law) * np.exp(noise * rng.standard_normal(len(N)))
    return make_runs(N, D, loss, C)


def training_curves(sizes=(2e7, 5e7, 1e8, 2e8, 5e8, 1e9, 2e9), max_flops: float = 1e21, points: int = 60,
                    noise: float = 0.003, seed: int = 0, law: dict | None = None) -> Runs:
    """Returns idealised training curves (one run per size, rows per logged step) up to `max_flops`:
    the loss after D tokens is law(N, D), i.e. each point is as if the schedule ended there
    (Chinchilla approach 1 gets this by training 4 cosine cycle lengths per size)."""
    law = dict(PUBLISHED if law is None else law)
    rng = np.random.default_rng(seed)
    cols = {k: [] for k in ("N", "D", "run", "step")}
    for n in sizes:
        d_max = max_flops / (6 * n)
        for s, d in enumerate(np.geomspace(d_max / 1000, d_max, points)):
            cols["N"].append(n), cols["D"].append(d), cols["run"].append(f"N={n:.3g}"), cols["step"].append(s)
    N, D = np.array(cols["N"]), np.array(cols["D"])
    loss = chinchilla_loss(N, D, **law) * np.exp(noise * rng.standard_normal(len(N)))
    return make_runs(N, D, loss, step=cols["step"], run=cols["run"])


def kaplan_runs(N_c=K.KAPLAN_ND_N_C, D_c=K.KAPLAN_ND_D_C, alpha_N=K.KAPLAN_ND_ALPHA_N,
                alpha_D=K.KAPLAN_ND_ALPHA_D, noise: float = 0.005, seed: int = 0) -> Runs:
    """Returns a grid of runs (N from 1e6 to 1e9, D from 1e8 to 1e11) drawn from Kaplan's L(N, D)."""
    rng = np.random.default_rng(seed)
    N, D = (a.ravel() for a in np.meshgrid(np.geomspace(1e6, 1e9, 8), np.geomspace(1e8, 1e11, 8)))
    loss = kaplan_loss_nd(N, D, N_c, D_c, alpha_N, alpha_D) * np.exp(noise * rng.standard_normal(len(N)))
    return make_runs(N, D, loss)


def write_fake_metrics(manifest: dict, law: dict, *, eval_lines: bool = True, points: int = 11,
                       noise: float = 0.003, seed: int = 0, truncated_tail: bool = True,
                       done_marker: bool = True) -> None:
    """Writes a metrics.jsonl into each planned run's workdir as `gopher-jax train` would, with the
    loss after D tokens = law(N, D) * exp(noise * normal) (each point as if its schedule ended there),
    a held-out eval line at the last step, (truncated_tail) the half-written line a killed run leaves,
    and (done_marker) the sweep runner's DONE marker."""
    import json
    import os

    rng = np.random.default_rng(seed)
    for run in manifest["runs"]:
        with open(os.path.join(run["workdir"], "metrics.jsonl"), "w") as f:
            loss = None
            for step in np.linspace(0, run["steps"], points).astype(int):
                D = max(step, 1) * run["tokens_per_step"]
                loss = float(chinchilla_loss(run["N"], D, **law) * np.exp(noise * rng.standard_normal()))
                f.write(json.dumps({"step": int(step), "loss": loss, "tokens_per_s": 1e4, "mfu": 0.1}) + "\n")
            if eval_lines:
                f.write(json.dumps({"step": run["steps"], "eval_loss": loss}) + "\n")
            if truncated_tail:
                f.write('{"step": 9')
        if done_marker:  # as the sweep runner marks a run whose training exited 0
            from gopher_jax.sweep import status
            status.write_marker(run["workdir"], status.DONE_FILE, {"exit_code": 0})


def isoflop_exponents(runs: Runs, law: dict) -> tuple[float, float]:
    """Returns (a, b) of N_opt ~ C^a, D_opt ~ C^b for `law` itself along the runs' budgets: at each
    budget the exact minimum of the law on that budget's line log D = s log N + k (log D is linear
    in log N at fixed C for any FLOP count), found with scipy rather than a parabola, then a
    least-squares line through the budgets in log-log space. The yardstick a fit should recover."""
    from scipy.optimize import minimize_scalar

    from gopher_jax.scaling.approach2 import budget_groups

    C, N, D = [], [], []
    for g in budget_groups(runs):
        n, d = np.log(runs.N[g]), np.log(runs.D[g])
        slope, intercept = np.polyfit(n, d, 1)
        res = minimize_scalar(lambda x: chinchilla_loss(np.exp(x), np.exp(slope * x + intercept), **law),
                              bounds=(n.min() - 3, n.max() + 3), method="bounded", options={"xatol": 1e-9})
        C.append(np.exp(np.mean(np.log(runs.C[g]))))
        N.append(np.exp(res.x))
        D.append(np.exp(slope * res.x + intercept))
    return float(np.polyfit(np.log(C), np.log(N), 1)[0]), float(np.polyfit(np.log(C), np.log(D), 1)[0])
