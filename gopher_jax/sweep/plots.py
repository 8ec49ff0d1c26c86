"""Plots of a comparison (PNG, matplotlib Agg): held-out curves overlaid per arm, and Δ bars with CIs.

Curves: each arm's mean over seeds at every evaluated step, with a band from the lowest to the
highest seed (with 2-3 seeds, a min-max band shows the spread honestly; a t-band would be wider
than the data). Only steps every seed of the arm evaluated are drawn.
Δ bars: the table's paired Δ vs the baseline with its t-interval as the error bar.
"""
from __future__ import annotations

import io

import numpy as np

from gopher_jax.sweep.results import metric_curve
from gopher_jax.train import workdir_fs


def _save(fig, path: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    workdir_fs.write_bytes_atomic(path, buf.getvalue())
    return path


def plot_curves(records: list[dict], metric: str, path: str) -> str | None:
    """Draws `metric` against step for every arm (mean line, min-max band over seeds); returns the path."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms: dict[str, list] = {}
    for r in records:
        if r.get("status") == "done":
            arms.setdefault(r["arm"], []).append(dict(metric_curve(r["run_dir"], metric)))
    if not any(c for curves in arms.values() for c in curves):
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for arm, curves in sorted(arms.items()):
        steps = sorted(set.intersection(*(set(c) for c in curves)))
        if not steps:
            continue
        ys = np.array([[c[s] for s in steps] for c in curves])
        line, = ax.plot(steps, ys.mean(0), "o-", ms=3, label=f"{arm} (n={len(curves)})")
        if len(curves) > 1:
            ax.fill_between(steps, ys.min(0), ys.max(0), color=line.get_color(), alpha=0.2)
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric}: mean over seeds, band = min..max seed")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = _save(fig, path)
    plt.close(fig)
    return out


def plot_deltas(table: dict, path: str) -> str | None:
    """Draws each arm's paired Δ vs the baseline with its t-interval; returns the path (None: nothing to draw)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in table["arms"] if r["arm"] != table["baseline"] and r.get("delta") is not None]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(rows) + 3), 4.5))
    x = np.arange(len(rows))
    err = [r["delta_ci"] if r.get("delta_ci") is not None else 0.0 for r in rows]
    ax.bar(x, [r["delta"] for r in rows], yerr=err, capsize=6, color="tab:blue", alpha=0.8)
    for xi, r in zip(x, rows):
        if r.get("p_value") is not None:
            ax.annotate(f"p={r['p_value']:.2g}", (xi + 0.06, r["delta"] / 2), ha="left", va="center", fontsize=8)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(x, [r["arm"] for r in rows], rotation=15)
    ax.set_ylabel(f"Δ {table['metric']}\nvs {table['baseline']}")
    ax.set_title(f"arm − baseline, paired by seed: mean ± {round(table['level'] * 100)}% t-interval", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    out = _save(fig, path)
    plt.close(fig)
    return out
