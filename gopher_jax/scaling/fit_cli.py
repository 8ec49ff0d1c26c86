"""`gopher-jax scaling fit --runs runs.csv [--approach 1|2|3|kaplan|all] [--json]`."""
from __future__ import annotations

import argparse
import json
import sys

from gopher_jax.scaling.bootstrap import DEFAULT_LEVEL, FitResult
from gopher_jax.scaling.runs import read_csv

APPROACH_CHOICES = ("1", "2", "3", "kaplan", "all")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the fit command's flags."""
    parser.add_argument("--runs", required=True, help="CSV with columns N, D, loss (optional C, step, run)")
    parser.add_argument("--approach", default="all", choices=APPROACH_CHOICES,
                        help="which fit (default all that the data allow; 1 needs training curves)")
    parser.add_argument("--json", action="store_true",
                        help="print JSON (one approach: its dict; all: keyed by approach)")
    parser.add_argument("--out", help="also write the JSON to this file (input to `scaling optimal --fit`)")
    parser.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples for intervals (0 = none)")
    parser.add_argument("--level", type=float, default=DEFAULT_LEVEL, help="interval level (0.8 = 10th-90th pct)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--starts", default="256", type=_starts,
                        help="approach 3: L-BFGS starts from the ranked 4,500-point paper grid, or 'all'")


def _starts(text: str) -> str:
    if text != "all" and not (text.isdigit() and int(text) > 0):
        raise argparse.ArgumentTypeError(f"--starts={text!r} must be a positive integer or 'all'")
    return text


def fit_one(approach: str, runs, args) -> FitResult:
    """Runs one approach's fit; returns its FitResult."""
    kw = dict(n_boot=args.bootstrap, level=args.level, seed=args.seed)
    if approach == "1":
        from gopher_jax.scaling.approach1 import fit_approach1
        return fit_approach1(runs, **kw)
    if approach == "2":
        from gopher_jax.scaling.approach2 import fit_approach2
        return fit_approach2(runs, **kw)
    if approach == "3":
        from gopher_jax.scaling.approach3 import fit_approach3
        top_k = None if args.starts == "all" else int(args.starts)
        return fit_approach3(runs, top_k=top_k, **kw)
    from gopher_jax.scaling.kaplan import fit_kaplan
    return fit_kaplan(runs, **kw)


def final_points(runs):
    """Returns the last row of each run: the table approaches 2, 3 and Kaplan fit when curves are given."""
    if runs.run is None and runs.step is None:
        return runs
    import numpy as np
    groups = runs.groups()
    last = [idx[np.argmax(runs.D[idx])] for idx in groups.values()]
    return runs.take(np.array(last))


def format_result(res: FitResult) -> str:
    """Returns a readable block: one line per parameter with its interval."""
    pct = f"{(1 - res.level) / 2 * 100:.0f}-{(1 + res.level) / 2 * 100:.0f}%"
    lines = [f"approach {res.approach}  (bootstrap n={res.n_boot}, failed={res.n_failed}, interval {pct})"]
    for k, v in res.params.items():
        lo, hi = res.intervals.get(k, (float("nan"), float("nan")))
        lines.append(f"  {k:<16} {v:>12.4g}   [{lo:.4g}, {hi:.4g}]")
    for part, why in res.extra.get("skipped", {}).items():
        lines.append(f"  {part}: skipped ({why})")
    for b in res.extra.get("budgets", []):
        note = "  (vertex outside the trained sizes: extrapolated)" if b.get("extrapolated") else ""
        lines.append(f"  budget C={b['C']:.3g}: N_opt={b['N_opt']:.3g} D_opt={b['D_opt']:.3g} "
                     f"loss={b['loss_opt']:.4f}{note}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Fits and prints; returns 0, or 1 if a requested approach could not be fitted."""
    runs = read_csv(args.runs)
    wanted = ("1", "2", "3", "kaplan") if args.approach == "all" else (args.approach,)
    results, errors = {}, {}
    for a in wanted:
        data = runs if a == "1" else final_points(runs)
        try:
            results[a] = fit_one(a, data, args)
        except ValueError as e:
            errors[a] = str(e)
    if args.approach != "all" and errors:
        print(f"gopher-jax scaling fit: approach {args.approach}: {errors[args.approach]}", file=sys.stderr)
        return 1
    payload = (results[args.approach].to_json() if args.approach != "all" else
               {**{a: r.to_json() for a, r in results.items()}, **{a: {"error": e} for a, e in errors.items()}})
    if args.out:
        with open(args.out, "w") as f:
            json.dump(payload, f, indent=2)
    if args.json:
        print(json.dumps(payload, indent=2))
    else:
        for a in wanted:
            print(format_result(results[a]) if a in results else f"approach {a}: skipped ({errors[a]})")
            print()
    return 0 if results else 1
