"""Benchmark of the scaling-law fits on synthetic data drawn from Chinchilla's published law.

Reports wall time and recovered coefficients of approach 3 with the ranked top-k grid (default)
against the paper's full 4,500-start grid, its bootstrap, and approaches 1 and 2. Writes JSON.

  /work/venv/bin/python benchmarks/scaling_fit_bench.py [--out scaling_fit_bench.json] [--full-grid]
"""
from __future__ import annotations

import argparse
import json
import time

from gopher_jax.scaling import synthetic
from gopher_jax.scaling.approach1 import fit_approach1
from gopher_jax.scaling.approach2 import fit_approach2
from gopher_jax.scaling.approach3 import fit_approach3, fit_theta, theta_to_params


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default="")
    p.add_argument("--full-grid", action="store_true", help="also run all 4,500 L-BFGS starts (slow)")
    p.add_argument("--bootstrap", type=int, default=200)
    args = p.parse_args()
    runs = synthetic.isoflop_runs(noise=0.005, seed=1)
    curves = synthetic.training_curves(noise=0.003, seed=0)
    report = {"n_runs": len(runs), "truth": synthetic.PUBLISHED}
    (theta, obj), t = timed(lambda: fit_theta(runs, top_k=256))
    report["approach3_top256"] = {"seconds": t, "objective": obj, **theta_to_params(theta)}
    if args.full_grid:
        (theta, obj), t = timed(lambda: fit_theta(runs, top_k=None))
        report["approach3_full_grid"] = {"seconds": t, "objective": obj, **theta_to_params(theta)}
    res, t = timed(lambda: fit_approach3(runs, n_boot=args.bootstrap))
    report["approach3_with_bootstrap"] = {"seconds": t, "n_boot": args.bootstrap, **res.to_json()}
    res, t = timed(lambda: fit_approach2(runs, n_boot=args.bootstrap))
    report["approach2"] = {"seconds": t, **{k: v for k, v in res.to_json().items() if k != "budgets"}}
    res, t = timed(lambda: fit_approach1(curves, n_boot=args.bootstrap))
    report["approach1"] = {"seconds": t, **{k: v for k, v in res.to_json().items() if k != "envelope"}}
    text = json.dumps(report, indent=2, default=float)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
