"""Regenerates docs/images/scaling_*.png from synthetic runs drawn from Chinchilla's published law
(noise 0.5%), so the pictures show what the toolkit draws from a real sweep.

  /work/venv/bin/python benchmarks/scaling_docs_figures.py [--out docs/images]
"""
from __future__ import annotations

import argparse
import os
import tempfile

from gopher_jax.scaling import synthetic
from gopher_jax.scaling.plot_cli import make_plots
from gopher_jax.scaling.runs import read_csv, write_csv


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "docs", "images"))
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs_csv, curves_csv = os.path.join(tmp, "runs.csv"), os.path.join(tmp, "curves.csv")
        write_csv(synthetic.isoflop_runs(noise=0.005, seed=1), runs_csv)
        write_csv(synthetic.training_curves(noise=0.003, seed=0), curves_csv)
        for path in make_plots(args.out, "scaling_synthetic_", read_csv(runs_csv), read_csv(curves_csv)):
            print(os.path.relpath(path))


if __name__ == "__main__":
    main()
