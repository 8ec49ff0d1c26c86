"""`gopher-jax data build-scaling-corpus`: the IsoFLOP sweep's corpus, from installed packages, offline.

    gopher-jax data build-scaling-corpus --out /work/scaling_corpus [--min_tokens=50_000_000] \
        [--max_bytes_per_component=64_000_000] [--workers 2]

Gathers Python sources (`code`) and English prose (`prose`) from this interpreter's packages, runs
them through `data process` and `data pack` with a byte-level tokenizer, and writes OUT/corpus.json
(figures) and OUT/data.gin (train on it: --gin_file=OUT/data.gin). gopher_jax/data/scaling_corpus.py
describes each step.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the command's flags to parser."""
    from gopher_jax.data import scaling_corpus as sc
    from gopher_jax.data.scaling_sources import EMBEDDED_PROSE

    parser.add_argument("--out", required=True, help="new or empty directory to build the corpus in")
    parser.add_argument("--min_tokens", type=int, default=sc.DEFAULT_MIN_TOKENS,
                        help="fail unless the packed train split has at least this many tokens")
    parser.add_argument("--max_bytes_per_component", type=int, default=sc.DEFAULT_MAX_BYTES,
                        help="UTF-8 bytes of raw text gathered per component, before filtering")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                        help="processes for docstring extraction, and components processed and packed side by side")
    parser.add_argument("--seq_len", type=int, default=sc.SEQ_LEN, help="packed row length (the run's train.seq_len)")
    parser.add_argument("--validation_fraction", type=float, default=sc.VALIDATION_FRACTION,
                        help="share of each component's documents held out")
    parser.add_argument("--site_packages", action="append", default=None,
                        help="site-packages directory to read (repeatable; default: this interpreter's)")
    parser.add_argument("--stdlib", default=None,
                        help="standard-library directory to read (default: this interpreter's; '' for none)")
    parser.add_argument("--embedded", default=",".join(EMBEDDED_PROSE),
                        help="embedded-corpus prose components to include ('' for none)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bars")


def _roots(args: argparse.Namespace):
    from gopher_jax.data import installed_text

    if args.site_packages is None and args.stdlib is None:
        return None
    defaults = installed_text.default_roots()
    site = ([installed_text.Root("site-packages", os.path.abspath(p)) for p in args.site_packages]
            if args.site_packages is not None else [r for r in defaults if r.label == "site-packages"])
    stdlib = ([installed_text.Root("stdlib", os.path.abspath(args.stdlib))] if args.stdlib
              else [] if args.stdlib == "" else [r for r in defaults if r.label == "stdlib"])
    missing = [r.path for r in site + stdlib if not os.path.isdir(r.path)]
    if missing:
        raise ValueError(f"--site_packages/--stdlib name directories that do not exist: {missing}")
    return tuple(site + stdlib)


def run(args: argparse.Namespace) -> int:
    """Builds the corpus, prints its figures; returns 0, or 2 on a bad flag or a corpus below --min_tokens."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # inherited by the worker processes
    from gopher_jax.data import scaling_corpus as sc

    # Every setting spelled out, defaults included: corpus.json records how to rebuild exactly this.
    flags = [f"--{k}={v}" for k, v in vars(args).items() if v is not None and k not in ("site_packages", "no_progress")]
    flags += [f"--site_packages={p}" for p in args.site_packages or ()]
    command = shlex.join(["gopher-jax", "data", "build-scaling-corpus", *flags])
    try:
        if args.workers < 1:
            raise ValueError(f"--workers={args.workers}: expected at least 1")
        options = sc.BuildOptions(
            out=args.out, min_tokens=args.min_tokens, max_bytes_per_component=args.max_bytes_per_component,
            workers=args.workers, seq_len=args.seq_len, validation_fraction=args.validation_fraction,
            roots=_roots(args), embedded=tuple(c for c in args.embedded.split(",") if c),
            progress=not args.no_progress, command=command)
        record = sc.build(options)
    except (ValueError, FileNotFoundError) as e:  # CorpusTooSmall is a ValueError
        print(f"gopher-jax data build-scaling-corpus: {e}", file=sys.stderr)
        return 2
    print(format_table(record))
    print(f"\ncorpus: {record['paths']['manifest']}\ntrain on it: --gin_file={record['paths']['data_gin']}")
    return 0


def format_table(record: dict) -> str:
    """Returns the per-component table of corpus.json's figures."""
    lines = [f"{'component':<10}{'documents':>12}{'bytes':>15}{'train tokens':>15}{'valid tokens':>14}"
             f"{'bytes/token':>12}{'weight':>8}"]
    for c, v in record["components"].items():
        docs, size = sum(v["documents"].values()), sum(v["bytes"].values())
        lines.append(f"{c:<10}{docs:>12,}{size:>15,}{v['train_tokens']:>15,}{v['validation_tokens']:>14,}"
                     f"{v['bytes_per_token'] or 0:>12.4f}{v['weight']:>8.3f}")
    lines.append(f"{'total':<10}{'':>12}{'':>15}{record['total_train_tokens']:>15,}"
                 f"{record['total_validation_tokens']:>14,}   ({record['seconds']['total']:.0f} s)")
    return "\n".join(lines)
