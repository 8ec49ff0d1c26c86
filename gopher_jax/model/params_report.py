"""`gopher-jax params`: parameter counts and per-module shapes of a gin model config.

Shapes come from `jax.eval_shape`, so even the 280B config answers in seconds on a laptop.
"""
from __future__ import annotations

import argparse
import json
import time
from collections import OrderedDict

from gopher_jax import gin_utils
from gopher_jax.model.config import ModelConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `gopher-jax params`."""
    gin_utils.add_gin_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--seq_len", type=int, default=0,
                        help="sequence length for the FLOP estimate (default: ModelConfig.max_len)")


def module_of(path: str) -> str:
    """Groups a parameter path by its module: 'layers/attention/query/kernel' -> 'layers/attention'."""
    parts = path.split("/")
    return "/".join(parts[:2]) if len(parts) > 2 else parts[0]


def build_report(config: ModelConfig, seq_len: int = 0) -> dict:
    """Returns the JSON-ready report: counts, per-module totals and every parameter's shape."""
    from gopher_jax.model.param_count import count_params, param_entries

    entries = param_entries(config)
    counts = count_params(config)
    modules: "OrderedDict[str, int]" = OrderedDict()
    for e in entries:
        modules[module_of(e.path)] = modules.get(module_of(e.path), 0) + e.size
    report = {
        **counts,
        "config": {k: v for k, v in config.__dict__.items()},
        "modules": dict(modules),
        "params": [{"path": e.path, "shape": list(e.shape), "dtype": e.dtype, "axes": list(e.axes),
                    "size": e.size} for e in entries],
    }
    report.update(_flops(config, seq_len or config.max_len))
    return report


def _flops(config: ModelConfig, seq_len: int) -> dict:
    """FLOPs per token from the scaling toolkit when it is installed; empty otherwise."""
    try:
        from gopher_jax.scaling import flops
    except ImportError:
        return {}
    try:
        return {"seq_len": seq_len,
                "train_flops_per_token_6n": flops.flops_per_token(config, seq_len, method="6nd"),
                "train_flops_per_token_chinchilla": flops.flops_per_token(config, seq_len, method="chinchilla")}
    except (AttributeError, TypeError):  # toolkit API still changing: the counts stand alone
        return {}


def _human(n: float) -> str:
    for unit, div in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return str(int(n))


def run(args: argparse.Namespace) -> int:
    """Prints the parameter report of the gin-configured model; returns 0."""
    start = time.perf_counter()
    gin_utils.parse_gin(args.gin_file, args.gin_param)
    config = ModelConfig()
    report = build_report(config, args.seq_len)
    report["wall_s"] = round(time.perf_counter() - start, 3)
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{'parameter':<48} {'shape':<26} {'logical axes':<40} {'count':>10}")
    for p in report["params"]:
        print(f"{p['path']:<48} {str(tuple(p['shape'])):<26} {str(tuple(p['axes'])):<40} {_human(p['size']):>10}")
    print("\nper module:")
    for name, size in report["modules"].items():
        print(f"  {name:<40} {_human(size):>10}")
    print(f"\ntotal          {report['total']:>16,d}  ({_human(report['total'])})")
    print(f"embedding      {report['embedding']:>16,d}")
    print(f"non_embedding  {report['non_embedding']:>16,d}  ({_human(report['non_embedding'])})")
    if report["vocab_padding"]:
        print(f"vocab padding  {report['vocab_padding']:>16,d}  (rows added for sharding; logits unchanged)")
    if "train_flops_per_token_6n" in report:
        print(f"train FLOPs/token at seq {report['seq_len']}: 6N {report['train_flops_per_token_6n']:.4g}, "
              f"Chinchilla App. F {report['train_flops_per_token_chinchilla']:.4g}")
    print(f"(computed with jax.eval_shape in {report['wall_s']:.2f} s)")
    return 0
