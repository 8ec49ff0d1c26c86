"""`gopher-jax compare DIR [RUN...] [--baseline=ARM] [--metric=eval_bits_per_byte] [--json|--csv|--md]`.

Reads every run's own summary.json, config.gin and metrics.jsonl (results.py), writes DIR/results.jsonl
(one record per run, gin bindings as columns), prints one row per arm (compare.py: mean ± 95% CI over
seeds, paired Δ vs the baseline with its p-value and bootstrap CI, tokens, FLOPs, tokens/s, MFU) and
writes DIR/compare_curves.png and DIR/compare_delta.png (plots.py).
"""
from __future__ import annotations

import argparse
import json
import sys

from gopher_jax.sweep import compare, plots, results
from gopher_jax.train import workdir_fs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `gopher-jax compare`."""
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="a sweep directory, then optionally more sweep directories or train workdirs")
    parser.add_argument("--baseline", default=None, help="arm to compare against (default: the sweep's baseline)")
    parser.add_argument("--metric", default=compare.DEFAULT_METRIC,
                        help="summary.json metric to compare (eval_bits_per_byte, eval_loss, "
                             "eval_bits_per_byte/<component>, ...)")
    fmt = parser.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print the comparison as JSON")
    fmt.add_argument("--csv", action="store_true", help="print one CSV row per arm")
    fmt.add_argument("--md", action="store_true", help="print Markdown tables (the default output too)")
    parser.add_argument("--level", type=float, default=0.95, help="confidence level of every interval")
    parser.add_argument("--plots_dir", default=None, help="where the PNGs go (default: DIR)")
    parser.add_argument("--no_plots", action="store_true")


def _default_baseline(path: str) -> str | None:
    from gopher_jax.sweep.plan import PLAN_FILE
    plan = workdir_fs.join(path, PLAN_FILE)
    return json.loads(workdir_fs.read_text(plan)).get("baseline") if workdir_fs.exists(plan) else None


def run(args: argparse.Namespace) -> int:
    """Runs the compare command; returns 0, or 2 when the inputs cannot be compared."""
    try:
        records = results.collect(args.paths)
        table = compare.compare_arms(records, baseline=args.baseline or _default_baseline(args.paths[0]),
                                     metric=args.metric, level=args.level)
    except (ValueError, FileNotFoundError) as e:
        print(f"gopher-jax compare: {e}", file=sys.stderr)
        return 2
    out_dir = args.paths[0]
    results_path = results.write_results(records, workdir_fs.join(out_dir, results.RESULTS_FILE))
    written = [results_path]
    if not args.no_plots:
        pd = args.plots_dir or out_dir
        workdir_fs.makedirs(pd)
        curve_metric = args.metric if args.metric.startswith("eval") else compare.DEFAULT_METRIC
        written += [p for p in (plots.plot_curves(records, curve_metric, workdir_fs.join(pd, "compare_curves.png")),
                                plots.plot_deltas(table, workdir_fs.join(pd, "compare_delta.png"))) if p]
    if args.json:
        print(json.dumps({**table, "written": written}, indent=1))
    elif args.csv:
        print(compare.to_csv(table), end="")
    else:
        print(compare.to_markdown(table))
        not_done = [r["run"] for r in records if r.get("status") != "done"]
        if not_done:
            print(f"\n{len(not_done)} run(s) not finished, left out: {not_done}")
        print("\nwrote " + ", ".join(written))
    return 0
