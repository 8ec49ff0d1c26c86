"""`gopher-jax scaling sweep --out DIR [--dry-run | --run] [--collect] [--fit]`: an IsoFLOP sweep.

One command end to end on a laptop:
  gopher-jax scaling sweep --out /tmp/isoflop --run --collect --fit
generates the sweep (a budget x size spec on the sweep runner, gopher_jax/sweep), trains the runs,
collects runs.csv/curves.csv, fits approaches 1-3 and writes the plots next to them.
"""
from __future__ import annotations

import argparse
import json
import os

from gopher_jax.scaling import sweep as S

DEFAULT_BUDGETS = "1e12,3e12,1e13"
DEFAULT_SIZES = "2x64,2x128,4x128,4x192"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the sweep command's flags."""
    parser.add_argument("--out", required=True, help="sweep directory (manifest, overrides, results)")
    parser.add_argument("--budgets", default=DEFAULT_BUDGETS, help="comma-separated training FLOP budgets")
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="comma-separated LAYERSxWIDTH model shapes")
    parser.add_argument("--head_dim", type=int, default=32)
    parser.add_argument("--seq_len", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--run_gin", action="append", default=None,
                        help="run gin file(s) (default gin_configs/runs/pretrain.gin)")
    parser.add_argument("--model_gin", action="append", default=None,
                        help="base model gin file(s) the sizes override (default gin_configs/models/tiny.gin)")
    parser.add_argument("--method", default="chinchilla", choices=("chinchilla", "6nd", "kaplan"),
                        help="FLOP count that turns a budget into steps")
    parser.add_argument("--min_steps", type=int, default=20, help="leave out runs shorter than this")
    parser.add_argument("--dry-run", dest="dry_run", action="store_true", help="write the plan, print the commands")
    parser.add_argument("--run", action="store_true",
                        help="train unfinished runs here on the sweep runner (finished runs are skipped, killed "
                             "ones resume; `gopher-jax sweep --out DIR --executor=ray` runs the same plan on Ray)")
    parser.add_argument("--workers", type=int, default=1, help="with --run: local worker processes")
    parser.add_argument("--collect", action="store_true", help="gather metrics.jsonl into runs.csv and curves.csv")
    parser.add_argument("--fit", action="store_true", help="after --collect: fit approaches and write plots")
    parser.add_argument("--bootstrap", type=int, default=100, help="bootstrap resamples for --fit")


def generate(args) -> dict:
    """Plans and writes the sweep; returns the manifest."""
    from gopher_jax.scaling.model_zoo import load_config

    run_gin = args.run_gin or ["gin_configs/runs/pretrain.gin"]
    model_gin = args.model_gin or ["gin_configs/models/tiny.gin"]
    base = load_config(model_gin)
    sizes = [S.Size.parse(s, args.head_dim) for s in args.sizes.split(",") if s]
    budgets = [float(b) for b in args.budgets.split(",") if b]
    manifest = S.plan_sweep(budgets, sizes, base=base, out_dir=args.out, run_gin=run_gin, model_gin=model_gin,
                            seq_len=args.seq_len, batch_size=args.batch_size, method=args.method,
                            min_steps=args.min_steps)
    S.write_sweep(manifest, args.out)
    return manifest


def run(args: argparse.Namespace) -> int:
    """Generates / runs / collects / fits as asked; returns 0, or 1 if any training run failed."""
    os.makedirs(args.out, exist_ok=True)
    manifest_path = os.path.join(args.out, "manifest.json")
    if args.dry_run or args.run or not os.path.isfile(manifest_path):
        manifest = generate(args)
        print(f"sweep: {len(manifest['runs'])} runs ({len(manifest['skipped'])} skipped as too short) "
              f"-> {manifest_path}")
        for r in manifest["runs"]:
            print(f"  {r['name']:<22} N={r['N']:>10,} steps={r['steps']:>6} tokens={r['tokens']:>10,} C={r['C']:.3g}")
    else:
        manifest = S.load_manifest(args.out)
    if args.dry_run or not (args.run or args.collect):
        print("\n".join(S.shell_commands(manifest)))
        return 0
    failed = 0
    if args.run:
        failed = sum(code != 0 for code in S.run_local(args.out, workers=args.workers).values())
    if args.collect:
        runs_csv, curves_csv, missing = S.write_collected(manifest, args.out)
        print(f"collected -> {runs_csv}, {curves_csv}" + (f"; no metrics yet for {missing}" if missing else ""))
        if args.fit:
            fit_and_plot(args.out, runs_csv, curves_csv, args.bootstrap)
    return 1 if failed else 0


def fit_and_plot(out: str, runs_csv: str, curves_csv: str, n_boot: int) -> dict:
    """Fits every approach the sweep allows, writes fit.json and the plots; returns the fit JSON."""
    from gopher_jax.scaling.fit_cli import final_points, fit_one, format_result
    from gopher_jax.scaling.plot_cli import make_plots
    from gopher_jax.scaling.runs import read_csv

    finals, curves = read_csv(runs_csv), read_csv(curves_csv)
    ns = argparse.Namespace(bootstrap=n_boot, level=0.8, seed=0, starts="256")
    payload = {}
    for a in ("1", "2", "3"):
        try:
            res = fit_one(a, curves if a == "1" else final_points(finals), ns)
            payload[a] = res.to_json()
            print(format_result(res))
        except ValueError as e:
            payload[a] = {"error": str(e)}
            print(f"approach {a}: skipped ({e})")
    with open(os.path.join(out, "fit.json"), "w") as f:
        json.dump(payload, f, indent=2)
    for p in make_plots(out, "scaling_", finals, curves, payload):
        print(p)
    return payload
