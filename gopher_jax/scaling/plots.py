"""PNG plots in the style of Chinchilla's Figures 2-4 (matplotlib, Agg backend, no display)."""
from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from gopher_jax.scaling import constants as K  # noqa: E402
from gopher_jax.scaling.approach2 import budget_groups  # noqa: E402
from gopher_jax.scaling.laws import chinchilla_loss  # noqa: E402
from gopher_jax.scaling.optimal import optimal, published  # noqa: E402
from gopher_jax.scaling.runs import Runs  # noqa: E402


def _save(fig, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=85, bbox_inches="tight")  # keeps each PNG well under 100 KB
    plt.close(fig)
    return path


def plot_isoflop(runs: Runs, fit2: dict, path: str, title: str = "IsoFLOP profiles (approach 2)") -> str:
    """Writes Fig. 3: loss vs N per budget with fitted parabolas, then N_opt and D_opt vs C; returns path."""
    fig, ax = plt.subplots(1, 3, figsize=(15, 4.2))
    budgets = fit2["budgets"]
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(budgets)))
    for g, b, col in zip(budget_groups(runs), budgets, colors):
        r = runs.take(g)
        ax[0].scatter(r.N, r.loss, color=col, s=18)
        x = np.linspace(np.log(b["N_min"]), np.log(b["N_max"]), 100)
        ax[0].plot(np.exp(x), b["p2"] * x * x + b["p1"] * x + b["p0"], color=col, label=f"{b['C']:.1e} FLOPs")
        # hollow star: the vertex lies outside the trained sizes (an extrapolation)
        ax[0].scatter([b["N_opt"]], [b["loss_opt"]], marker="*", s=90, edgecolor="k",
                      facecolor="none" if b.get("extrapolated") else col)
    ax[0].set(xscale="log", xlabel="parameters N", ylabel="loss", title=title)
    ax[0].legend(fontsize=7)
    C = np.array([b["C"] for b in budgets])
    cc = np.geomspace(C.min() / 3, C.max() * 3, 50)
    for i, (key, coef, exp, lab) in enumerate((("N_opt", "k_N", "a", "parameters"), ("D_opt", "k_D", "b", "tokens"))):
        ax[i + 1].scatter(C, [b[key] for b in budgets], color=colors, zorder=3)
        ax[i + 1].plot(cc, fit2[coef] * cc ** fit2[exp], "k--", label=f"{key} ∝ C^{fit2[exp]:.2f}")
        ax[i + 1].set(xscale="log", yscale="log", xlabel="FLOPs C", ylabel=lab)
        ax[i + 1].legend()
    return _save(fig, path)


def plot_envelope(curves: Runs, fit1: dict, path: str) -> str:
    """Writes Fig. 2: training curves vs FLOPs with the minimum-loss envelope, and N_opt vs C; returns path."""
    fig, ax = plt.subplots(1, 2, figsize=(11, 4.2))
    groups = curves.groups()
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(groups)))
    for (name, idx), col in zip(groups.items(), colors):
        o = idx[np.argsort(curves.C[idx])]
        ax[0].plot(curves.C[o], curves.loss[o], color=col, lw=1, label=f"N={curves.N[o[0]]:.2g}")
    env = fit1["envelope"]
    ax[0].plot(env["C"], env["loss"], "k.", ms=3, label="envelope")
    ax[0].set(xscale="log", yscale="log", xlabel="FLOPs C", ylabel="loss", title="Training curve envelope (approach 1)")
    ax[0].legend(fontsize=7)
    cc = np.geomspace(min(env["C"]), max(env["C"]), 50)
    ax[1].scatter(env["C"], env["N"], s=8, color="k")
    ax[1].plot(cc, fit1["k_N"] * cc ** fit1["a"], "r--", label=f"N_opt ∝ C^{fit1['a']:.2f}")
    ax[1].set(xscale="log", yscale="log", xlabel="FLOPs C", ylabel="parameters")
    ax[1].legend()
    return _save(fig, path)


def plot_frontier(path: str, fit: dict | None = None, c_range=(1e17, 1e26)) -> str:
    """Writes the efficient frontier (Fig. 1 / A3 style): N_opt vs C for approaches 1-3 and Kaplan,
    published (solid) and fitted (dashed, from `fit` JSON), with Chinchilla and Gopher marked; returns path."""
    from gopher_jax.scaling.optimal import laws_from_fit

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    cc = np.geomspace(*c_range, 100)
    styles = {"1": "tab:blue", "2": "tab:orange", "3": "tab:green", "kaplan": "tab:gray"}
    for name, law in published().items():
        ax.plot(cc, [optimal(c, law)[0] for c in cc], color=styles[name], label=f"approach {name} (published)"
                if name != "kaplan" else "Kaplan et al. (2020)")
    if fit is not None:
        for name, law in laws_from_fit(fit).items():
            ax.plot(cc, [optimal(c, law)[0] for c in cc], "--", color=styles[name], label=f"approach {name} (fitted)")
    ax.scatter([6 * K.CHINCHILLA_PARAMS * K.CHINCHILLA_TOKENS], [K.CHINCHILLA_PARAMS], marker="*", s=120,
               color="k", zorder=4, label="Chinchilla 70B")
    ax.scatter([K.GOPHER_FLOPS], [K.GOPHER_PARAMS], marker="o", s=50, color="tab:red", zorder=4, label="Gopher 280B")
    ax.set(xscale="log", yscale="log", xlabel="training FLOPs", ylabel="parameters", title="Compute-optimal model size")
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_contours(law: dict, path: str, runs: Runs | None = None, n_range=(1e7, 1e12), c_range=(1e17, 1e25)) -> str:
    """Writes Fig. 4: contours of L(N, D = C/6N) over (C, N) with the efficient frontier, and
    IsoFLOP slices of the parametric law; `law` has E, A, B, alpha, beta; returns path."""
    p = {k: law[k] for k in ("E", "A", "B", "alpha", "beta")}
    fig, ax = plt.subplots(1, 2, figsize=(12, 4.5))
    C, N = np.meshgrid(np.geomspace(*c_range, 200), np.geomspace(*n_range, 200))
    L = chinchilla_loss(N, C / (6 * N), **p)
    cs = ax[0].contourf(C, N, np.log(L), levels=30, cmap="viridis")
    fig.colorbar(cs, ax=ax[0], label="log loss")
    cc = np.geomspace(*c_range, 50)
    frontier = [optimal(c, {"kind": "parametric", **p})[0] for c in cc]
    ax[0].plot(cc, frontier, "w--", label="efficient frontier (Eq. 4)")
    if runs is not None:
        ax[0].scatter(runs.C, runs.N, s=6, c="r", label="runs")
    ax[0].set(xscale="log", yscale="log", xlabel="FLOPs C", ylabel="parameters N", title="L(N, D) contours (approach 3)")
    ax[0].legend(fontsize=7)
    for c, col in zip(np.geomspace(*c_range, 6), plt.cm.viridis(np.linspace(0, 0.9, 6))):
        n = np.geomspace(*n_range, 200)
        ax[1].plot(n, chinchilla_loss(n, c / (6 * n), **p), color=col, label=f"{c:.0e}")
    ax[1].set(xscale="log", xlabel="parameters N", ylabel="loss", title="IsoFLOP slices of the fitted law")
    ax[1].set_ylim(p["E"], p["E"] + 2.0)
    ax[1].legend(fontsize=7)
    return _save(fig, path)


def _finite(*xs) -> bool:
    return all(x is not None and np.isfinite(x) for x in xs)


def plot_allocation(runs: Runs, fits: dict, path: str) -> str:
    """Writes N_opt(C) and D_opt(C) over the sweep's budgets: each approach's fitted power law with
    its bootstrap band (the interval of a at the budgets' geometric centre), approach 2's per-budget
    vertices, and lines of slope 0.5 (Chinchilla) and 0.73 (Kaplan) through the same centre; returns path."""
    fig, ax = plt.subplots(1, 2, figsize=(12, 4.5))
    lo, hi = runs.C.min() / 1.5, runs.C.max() * 1.5
    cc = np.geomspace(lo, hi, 50)
    c0 = float(np.exp(np.mean(np.log(runs.C))))
    styles = {"1": "tab:blue", "2": "tab:orange", "3": "tab:green"}
    for panel, (key, k_key, label) in enumerate((("a", "k_N", "N_opt (parameters)"), ("b", "k_D", "D_opt (tokens)"))):
        centre = None
        for name, fit in fits.items():
            if "error" in fit or not _finite(fit.get(key), fit.get(k_key) if name != "3" else fit.get("G")):
                continue
            if name == "3":  # Eq. 4: N_opt = G (C/6)^a, D_opt = (C/6)^b / G
                g = fit["G"]
                y = g * (cc / 6) ** fit["a"] if key == "a" else (cc / 6) ** fit["b"] / g
            else:
                y = fit[k_key] * cc ** fit[key]
            interval = fit.get("intervals", {}).get(key)
            text = f" [{interval[0]:.2f}, {interval[1]:.2f}]" if interval and None not in interval else ""
            ax[panel].plot(cc, y, color=styles[name], label=f"approach {name}: {key} = {fit[key]:.3f}{text}")
            if interval and None not in interval:
                y0 = float(np.interp(np.log(c0), np.log(cc), np.log(y)))
                band = [np.exp(y0 + e * (np.log(cc) - np.log(c0))) for e in interval]
                ax[panel].fill_between(cc, band[0], band[1], color=styles[name], alpha=0.12)
            if centre is None:
                centre = float(np.exp(np.interp(np.log(c0), np.log(cc), np.log(y))))
            if name == "2":
                col = "N_opt" if key == "a" else "D_opt"
                ax[panel].scatter([b["C"] for b in fit.get("budgets", [])], [b[col] for b in fit.get("budgets", [])],
                                  color=styles[name], zorder=4)
        if centre is not None:
            for slope, name, ls in (((0.5, "Chinchilla a = b = 0.5", ":"),
                                     (K.KAPLAN_A if key == "a" else K.KAPLAN_B, "Kaplan", "--"))):
                ax[panel].plot(cc, centre * (cc / c0) ** slope, color="gray", ls=ls, label=f"{name} (slope {slope})")
        ax[panel].set(xscale="log", yscale="log", xlabel="training FLOPs C (Chinchilla App. F)", ylabel=label)
        ax[panel].legend(fontsize=7)
    fig.suptitle("Compute-optimal allocation fitted to this sweep")
    return _save(fig, path)
