"""The throughput table of benchmarks/README.md: tiny, 44M and 117M at seq 512 and 2048.

    python benchmarks/run_matrix.py [--steps 3] [--only gopher_44m] [--out benchmarks/results]

Runs train_throughput.py once per row in a fresh process (4,096 tokens per step everywhere:
batch 8 at seq 512, batch 2 at seq 2048), writes one JSON per row into --out and prints the
markdown table. Rows listed in --extra add gin overrides (e.g. the XLA attention path). The table's MFU
is always recomputed from each row's tokens/s and peak by gopher_jax/train/mfu.py (`--table_only`
re-tables older results by the current definition).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROWS = [  # (name, model gin, seq_len, batch, extra gin params, extra flags)
    ("tiny", "gin_configs/models/tiny.gin", 512, 8, ["ModelConfig.max_len=512"], []),
    ("tiny", "gin_configs/models/tiny.gin", 2048, 2, ["ModelConfig.max_len=2048"], []),
    ("gopher_44m", "gin_configs/models/gopher_44m.gin", 512, 8, [], []),
    ("gopher_44m", "gin_configs/models/gopher_44m.gin", 2048, 2, [], []),
    # the optimisations one at a time, off
    ("gopher_44m xla attention", "gin_configs/models/gopher_44m.gin", 512, 8, ["ModelConfig.attention_impl='xla'"], []),
    ("gopher_44m rolled scan", "gin_configs/models/gopher_44m.gin", 512, 8, ["ModelConfig.scan_unroll=1"], []),
    ("gopher_44m no huge pages", "gin_configs/models/gopher_44m.gin", 512, 8, [], ["--host_hugepages=off"]),
    ("gopher_117m", "gin_configs/models/gopher_117m.gin", 512, 8, [], []),
    ("gopher_117m", "gin_configs/models/gopher_117m.gin", 2048, 2, [], []),
]


def mfu_of(gin_file: str, params: list[str], seq_len: int, tokens_per_s: float, peak_flops: float) -> dict:
    """Returns the one MFU (gopher_jax/train/mfu.py) of a row from its measured tokens/s and peak, so
    results written before that definition are tabled by it too."""
    from gopher_jax import gin_utils
    from gopher_jax.model.config import ModelConfig
    from gopher_jax.train.mfu import mfu_fields

    gin_utils.parse_gin([gin_file], params)
    return mfu_fields(ModelConfig(), seq_len, tokens_per_s, peak_flops)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--only", default="", help="run only rows whose name contains this")
    p.add_argument("--out", default=os.path.join(HERE, "results"))
    p.add_argument("--table_only", action="store_true", help="print the table from the JSON already in --out")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    env = {**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
    lines = ["| model | seq | batch | compile s | step s | tokens/s | MFU (model_causal) | MFU (6N) | peak GFLOP/s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, gin_file, seq, batch, params, flags in ROWS:
        if args.only and args.only not in name:
            continue
        slug = f"{name.replace(' ', '_')}_seq{seq}"
        out = os.path.join(args.out, f"{slug}.json")
        cmd = [sys.executable, os.path.join(HERE, "train_throughput.py"), f"--gin_file={gin_file}",
               f"--seq_len={seq}", f"--batch_size={batch}", f"--steps={args.steps}", f"--json={out}",
               *[f"--gin_param={g}" for g in params], *flags]
        if not args.table_only:
            print("+", " ".join(cmd), flush=True)
            subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
        r = json.load(open(out))
        m = mfu_of(gin_file, params, seq, r["tokens_per_s"], r["peak_gflops"] * 1e9)
        lines.append(f"| {name} | {seq} | {batch} | {r['compile_s']:.1f} | {r['step_s']:.2f} | {r['tokens_per_s']:,.0f} "
                     f"| {m['mfu']:.1%} | {m['mfu_6n']:.1%} | {r['peak_gflops']:.0f} |")
        print(lines[-1], flush=True)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
