"""`gopher-jax scaling flops --gin_file=... [--seq_len 2048] [--tokens 1.4e12] [--json]`."""
from __future__ import annotations

import argparse
import json

from gopher_jax.gin_utils import add_gin_arguments
from gopher_jax.scaling.flops import METHODS, flops_per_token, forward_breakdown
from gopher_jax.scaling.params import count_params, param_breakdown


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds gin flags plus sequence length and token count."""
    add_gin_arguments(parser)
    parser.add_argument("--seq_len", type=int, default=0, help="tokens per sequence (default ModelConfig.max_len)")
    parser.add_argument("--tokens", type=float, default=0.0, help="training tokens, for per-run FLOPs")
    parser.add_argument("--json", action="store_true")


def report(cfg, seq_len: int, tokens: float) -> dict:
    """Returns parameters, forward breakdown per token and training FLOPs per token/run by method."""
    fwd = {k: v / seq_len for k, v in forward_breakdown(cfg, seq_len).items()}
    per_token = {m: flops_per_token(cfg, seq_len, m) for m in METHODS}
    out = {"params": count_params(cfg), "non_embedding_params": count_params(cfg, embeddings=False),
           "param_breakdown": param_breakdown(cfg), "seq_len": seq_len,
           "forward_flops_per_token": fwd, "train_flops_per_token": per_token}
    if tokens:
        out["tokens"] = tokens
        out["train_flops_per_run"] = {m: v * tokens for m, v in per_token.items()}
    return out


def run(args: argparse.Namespace) -> int:
    """Prints the FLOP report of the gin-configured model; returns 0."""

    if not args.gin_file:
        raise SystemExit("gopher-jax scaling flops: give a model, e.g. --gin_file=gin_configs/models/tiny.gin")
    from gopher_jax.gin_utils import parse_gin
    from gopher_jax.model.config import ModelConfig
    parse_gin(args.gin_file, args.gin_param)
    cfg = ModelConfig()
    seq_len = args.seq_len or cfg.max_len
    r = report(cfg, seq_len, args.tokens)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    print(f"params {r['params']:,} (non-embedding {r['non_embedding_params']:,}), seq_len {seq_len}")
    print("forward FLOPs per token (Chinchilla App. F):")
    total = sum(r["forward_flops_per_token"].values())
    for k, v in r["forward_flops_per_token"].items():
        print(f"  {k:<22} {v:>16,.0f}  {v / total:6.1%}")
    print("training FLOPs per token (forward + backward):")
    for m, v in r["train_flops_per_token"].items():
        line = f"  {m:<12} {v:>18,.0f}"
        if tokens := r.get("tokens"):
            line += f"   per run ({tokens:.3g} tokens): {v * tokens:.4g}"
        print(line)
    return 0
