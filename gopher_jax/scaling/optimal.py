"""Compute-optimal planner: N_opt and D_opt for a FLOP budget by each approach.

Published coefficients by default (constants.py): approach 1 from Table 3's power laws,
approach 2 from Table 2's exponents through Fig. 3's 63B at Gopher's budget, approach 3 from
Eq. 4 with the published E, A, B, alpha, beta, and Kaplan's N_opt = 1.3e9 (C / PF-day)^0.73.
A file written by `gopher-jax scaling fit --json` replaces the approaches it contains.
"""
from __future__ import annotations

import json

import numpy as np

from gopher_jax.scaling import constants as K
from gopher_jax.scaling.laws import chinchilla_loss, eq4_optimal
from gopher_jax.scaling.model_zoo import nearest_config
from gopher_jax.scaling.powerlaw import anchored_prefactor, fit_power_law

APPROACHES = ("1", "2", "3", "kaplan")


def table3_power_laws() -> dict[str, float]:
    """Returns a, k_N (log-log line of N against C through Chinchilla Table 3 without its 67B row)
    and the matching b = 1 - a, k_D = 1 / (6 k_N) of D = C / (6N)."""
    rows = [r for i, r in enumerate(K.TABLE3) if i != K.TABLE3_INCONSISTENT_ROW]
    N, C, _ = (np.array(x) for x in zip(*rows))
    a, k_N = fit_power_law(C, N)
    return {"a": a, "k_N": k_N, "b": 1 - a, "k_D": 1 / (6 * k_N)}


def published() -> dict[str, dict]:
    """Returns the published law of each approach: {'kind': 'power'|'parametric', coefficients, 'source'}."""
    a2, b2 = K.CHINCHILLA_EXPONENTS["2"]
    k2 = anchored_prefactor(a2, K.GOPHER_FLOPS, K.APPROACH2_N_AT_GOPHER)
    ak, bk = K.CHINCHILLA_EXPONENTS["kaplan"]
    kk = K.KAPLAN_N_OPT_PREFACTOR / K.PF_DAY ** ak
    return {
        "1": {"kind": "power", "a": K.APPROACH1_A, "k_N": K.APPROACH1_K_N, "b": 1 - K.APPROACH1_A,
              "k_D": 1 / (6 * K.APPROACH1_K_N), "source": "Chinchilla Table 3 (log-log fit, 67B row excluded)"},
        "2": {"kind": "power", "a": a2, "k_N": k2, "b": b2, "k_D": 1 / (6 * k2),
              "source": "Chinchilla Table 2 exponents through Fig. 3's 63B at 5.76e23"},
        "3": {"kind": "parametric", "E": K.CHINCHILLA_E, "A": K.CHINCHILLA_A, "B": K.CHINCHILLA_B,
              "alpha": K.CHINCHILLA_ALPHA, "beta": K.CHINCHILLA_BETA, "source": "Chinchilla Eq. 4 with Sec. 3.3 fit"},
        "kaplan": {"kind": "power", "a": ak, "k_N": kk, "b": bk, "k_D": 1 / (6 * kk),
                   "source": "Kaplan Sec. 6.1 N_opt = 1.3e9 (C/PF-day)^0.73, D = C/(6N)"},
    }


def laws_from_fit(fit: dict) -> dict[str, dict]:
    """Returns planner laws from `scaling fit --json` output (one approach's dict, or keyed by approach)."""
    entries = {str(fit["approach"]): fit} if "approach" in fit else fit
    out = {}
    for name, f in entries.items():
        # failed fits carry "error"; degenerate ones have null (non-finite) coefficients
        if not isinstance(f, dict) or "error" in f or any(v is None for v in f.values()):
            continue
        if name == "3":
            out[name] = {"kind": "parametric", **{k: f[k] for k in ("E", "A", "B", "alpha", "beta")}}
        elif name in ("1", "2"):
            out[name] = {"kind": "power", **{k: f[k] for k in ("a", "k_N", "b", "k_D")}}
        elif name == "kaplan" and "L(N,D).N_c" in f:
            out[name] = {"kind": "kaplan_nd", **{k.split(".")[1]: f[k] for k in f if k.startswith("L(N,D).")}}
        else:
            continue
        out[name]["source"] = "fitted"
    if not out:
        raise ValueError(f"the fit file has no usable approach (keys: {sorted(fit)}); write one with "
                         f"`gopher-jax scaling fit --runs runs.csv --json > fit.json`")
    return out


def optimal(flops: float, law: dict) -> tuple[float, float]:
    """Returns (N_opt, D_opt) for one law at `flops` training FLOPs."""
    if law["kind"] == "power":
        return law["k_N"] * flops ** law["a"], law["k_D"] * flops ** law["b"]
    if law["kind"] == "parametric":
        n, d = eq4_optimal(flops, *(law[k] for k in ("E", "A", "B", "alpha", "beta")))
        return float(n), float(d)
    if law["kind"] == "kaplan_nd":  # minimise Kaplan Eq. 1.5 along C = 6ND (closed form)
        u = law["alpha_N"] / law["alpha_D"]
        n = (u * law["N_c"] ** u * flops / (6 * law["D_c"])) ** (1 / (u + 1))
        return n, flops / (6 * n)
    raise ValueError(f"unknown law kind {law['kind']!r}")


def plan(flops: float, fit: dict | None = None, approaches=APPROACHES) -> dict[str, dict]:
    """Returns {approach: {N, D, tokens_per_param, flops, source, nearest_config, [loss]}}."""
    if not flops > 0:
        raise ValueError(f"--flops={flops} must be a positive FLOP budget, e.g. 5.76e23 (Gopher)")
    laws = published()
    if fit is not None:
        laws.update(laws_from_fit(fit))
    out = {}
    for name in approaches:
        law = laws[name]
        n, d = optimal(flops, law)
        entry = {"N": float(n), "D": float(d), "tokens_per_param": float(d / n), "flops": float(flops),
                 "source": law.get("source", "")}
        if law["kind"] == "power":
            entry.update(a=law["a"], b=law["b"])
        if law["kind"] == "parametric":
            entry["loss"] = float(chinchilla_loss(n, d, *(law[k] for k in ("E", "A", "B", "alpha", "beta"))))
            entry.update(a=law["beta"] / (law["alpha"] + law["beta"]), b=law["alpha"] / (law["alpha"] + law["beta"]))
        cfg = nearest_config(n)
        cfg["tokens"] = float(flops / (6 * cfg["params"]))  # what the budget buys that config (6ND)
        entry["nearest_config"] = cfg
        out[name] = entry
    return out


def load_fit(path: str) -> dict:
    """Reads a fit JSON file; returns the dict."""
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"--fit file {path!r} does not exist") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"--fit file {path!r} is not JSON ({e})") from None
