"""`gopher-jax scaling optimal --flops 5.76e23 [--fit fit.json] [--json]`."""
from __future__ import annotations

import argparse
import json

from gopher_jax.scaling.optimal import APPROACHES, load_fit, plan


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the planner's flags."""
    parser.add_argument("--flops", type=float, required=True, help="training FLOP budget, e.g. 5.76e23")
    parser.add_argument("--fit", help="JSON from `gopher-jax scaling fit --out` (default: published coefficients)")
    parser.add_argument("--approach", action="append", choices=APPROACHES, help="repeatable; default all")
    parser.add_argument("--json", action="store_true", help="print JSON keyed by approach, each with N and D")


def _si(x: float) -> str:
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def format_plan(result: dict) -> str:
    """Returns a readable table of the plan."""
    rows = [f"{'approach':<9} {'params':>8} {'tokens':>8} {'tok/param':>9}  nearest config (params, tokens at budget)"]
    for name, e in result.items():
        c = e["nearest_config"]
        rows.append(f"{name:<9} {_si(e['N']):>8} {_si(e['D']):>8} {e['tokens_per_param']:>9.1f}  "
                    f"{c['gin_file']} ({_si(c['params'])}, {_si(c['tokens'])})")
    first = next(iter(result.values()))
    head = f"compute-optimal allocation for C = {first['flops']:.3g} FLOPs"
    notes = [f"  {name}: {e['source']}" for name, e in result.items()]
    return "\n".join([head, *rows, "sources:", *notes])


def run(args: argparse.Namespace) -> int:
    """Prints the plan; returns 0."""
    fit = load_fit(args.fit) if args.fit else None
    result = plan(args.flops, fit, tuple(args.approach or APPROACHES))
    print(json.dumps(result, indent=2) if args.json else format_plan(result))
    return 0
