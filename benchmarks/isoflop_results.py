"""Commits the result of `gopher-jax scaling reproduce` for the docs: benchmarks/results/isoflop_reproduce.json
and the sweep's plots under docs/images/, from which benchmarks/render_docs.py renders docs/scaling.md's
IsoFLOP region.

    gopher-jax scaling reproduce --out /tmp/isoflop --workers 2      # about an hour on 2 CPU cores
    python benchmarks/isoflop_results.py --sweep /tmp/isoflop [--command_wall_s 3600]
    python benchmarks/render_docs.py

--command_wall_s records the wall time of the reproduce invocations that trained the sweep when the
report was written by `--fit-only` (which trains nothing and so measures no training wall time).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO, "benchmarks", "results", "isoflop_reproduce.json")
IMAGES = os.path.join(REPO, "docs", "images")
PLOTS = ("scaling_isoflop.png", "scaling_envelope.png", "scaling_allocation.png")
FIT_KEYS = ("a", "b", "k_N", "k_D", "E", "A", "B", "alpha", "beta", "G", "intervals", "interval_level",
            "n_boot", "n_boot_failed", "budgets", "error")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sweep", required=True, help="the --out directory of `gopher-jax scaling reproduce`")
    p.add_argument("--command_wall_s", type=float, default=None,
                   help="wall time of the invocations that trained the sweep, if the report has none")
    args = p.parse_args(argv)
    with open(os.path.join(args.sweep, "reproduce.json")) as f:
        rep = json.load(f)
    fits = {k: {kk: v for kk, v in fit.items() if kk in FIT_KEYS} for k, fit in rep["fits"].items()}
    corpus = rep.get("corpus", {})
    out = {"host": rep["host"], "verdict": rep["verdict"], "fits": fits, "runs": rep["runs"],
           "missing": rep["missing"], "budgets": rep["budgets"], "seq_len": rep["seq_len"],
           "batch_size": rep["batch_size"], "level": rep["level"], "train_wall_s": rep["train_wall_s"],
           "command_wall_s": rep["command_wall_s"] if rep["command_wall_s"] is not None else args.command_wall_s,
           "corpus": {"total_train_tokens": corpus.get("total_train_tokens"),
                      "components": {n: {"train_tokens": c.get("train_tokens"), "documents": c.get("documents")}
                                     for n, c in corpus.get("components", {}).items()}},
           "command": "gopher-jax scaling reproduce --out DIR --workers 2"}
    with open(OUT, "w") as f:
        json.dump(out, f, indent=2)
        f.write("\n")
    for name in PLOTS:
        src = os.path.join(args.sweep, name)
        if os.path.isfile(src):
            shutil.copyfile(src, os.path.join(IMAGES, f"isoflop_{name[len('scaling_'):]}"))
    print(f"wrote {os.path.relpath(OUT, REPO)} and docs/images/isoflop_*.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
