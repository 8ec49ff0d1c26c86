"""`gopher-jax scaling reproduce --out DIR [--workers N] [--plan-only] [--fit-only]`: Chinchilla's
IsoFLOP study from our own runs, end to end (gopher_jax/scaling/reproduce.py says what each step does).

    gopher-jax scaling reproduce --out runs/isoflop              # corpus, plan, train, fit, report
    gopher-jax scaling reproduce --out runs/isoflop --workers 2  # two local workers
    gopher-jax sweep --out runs/isoflop --executor=ray           # the same plan's runs on a Ray cluster
    gopher-jax scaling reproduce --out runs/isoflop --fit-only   # collect and fit what has trained

Stopping it (Ctrl-C, a lost machine) loses at most the unfinished steps of the runs in progress;
rerunning the command resumes. Several machines sharing DIR (local disk or gs://) split the runs.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from gopher_jax.scaling import reproduce as R


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the reproduce command's flags."""
    parser.add_argument("--out", required=True, help="sweep directory: plan, one workdir per run, fits, report")
    parser.add_argument("--corpus", default=None,
                        help="scaling corpus directory (default OUT/corpus; built there when missing)")
    parser.add_argument("--budgets", default=",".join(f"{b:g}" for b in R.BUDGETS),
                        help="comma-separated training FLOP budgets (Chinchilla App. F count)")
    parser.add_argument("--sizes", default=None,
                        help="sizes per budget, 'BUDGET:LxD,LxD;BUDGET:...' (default: the table in "
                             "gopher_jax/scaling/reproduce.py, SIZES_BY_BUDGET)")
    parser.add_argument("--workers", type=int, default=1, help="local worker processes training runs")
    parser.add_argument("--plan-only", dest="plan_only", action="store_true",
                        help="write the plan and print the runs, train nothing")
    parser.add_argument("--fit-only", dest="fit_only", action="store_true",
                        help="collect and fit the runs that have trained; train nothing")
    parser.add_argument("--bootstrap", type=int, default=R.N_BOOT, help="bootstrap resamples per approach")
    parser.add_argument("--level", type=float, default=R.LEVEL, help="interval level (0.95 = 2.5th-97.5th pct)")


def run(args: argparse.Namespace) -> int:
    """Builds, plans, trains, fits and reports as asked; returns 0, or 1 if a run failed or no fit was possible."""
    started = time.perf_counter()
    corpus_dir = args.corpus or os.path.join(args.out, "corpus")
    os.makedirs(args.out, exist_ok=True)
    try:
        data_gin = (R.corpus_gin(corpus_dir) if args.fit_only else R.ensure_corpus(corpus_dir))
        budgets = [float(b) for b in args.budgets.split(",") if b]
        sizes = R.parse_sizes(args.sizes) if args.sizes else None
        manifest = R.plan(args.out, data_gin, budgets=budgets, sizes_by_budget=sizes)
    except (ValueError, FileNotFoundError) as e:
        print(f"gopher-jax scaling reproduce: {e}", file=sys.stderr)
        return 2
    print(f"scaling reproduce: {len(manifest['runs'])} runs over budgets "
          + ", ".join(f"{b:.3g}" for b in manifest["budgets"]) + f" FLOPs -> {args.out}")
    for r in manifest["runs"]:
        hp = r["hparams"]
        print(f"  {r['name']:<34} N={r['N']:>10,} steps={r['steps']:>6} tokens={r['tokens']:>11,} "
              f"C={r['C']:.3g} lr={hp['optimizer.peak_learning_rate']:.3g} warmup={hp['optimizer.warmup_steps']}")
    for s in manifest["skipped"]:
        print(f"  skipped {s['name']}: {s['steps']} steps {s['reason']}")
    if args.plan_only:
        return 0
    failed = 0
    if not args.fit_only:
        codes = R.S.run_local(args.out, workers=args.workers)
        failed = sum(c != 0 for c in codes.values())
    try:
        fitted = R.fit_all(args.out, n_boot=args.bootstrap, level=args.level)
    except ValueError as e:
        print(f"gopher-jax scaling reproduce: {e}", file=sys.stderr)
        return 1
    wall = None if args.fit_only else time.perf_counter() - started
    print(R.write_report(args.out, manifest, fitted, wall_s=wall, corpus_dir=corpus_dir, level=args.level))
    print(f"report: {os.path.join(args.out, 'report.md')}, {os.path.join(args.out, 'reproduce.json')}")
    return 1 if failed else 0
