"""`gopher-jax scaling plot --runs runs.csv [--curves curves.csv] [--fit fit.json] --out DIR`."""
from __future__ import annotations

import argparse
import os

import numpy as np

from gopher_jax.scaling.runs import read_csv


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the plot command's flags."""
    parser.add_argument("--runs", help="final-loss CSV (IsoFLOP and contour plots)")
    parser.add_argument("--curves", help="training-curve CSV (approach-1 envelope plot)")
    parser.add_argument("--fit", help="fit JSON (dashed fitted lines on the frontier plot)")
    parser.add_argument("--out", required=True, help="directory for the PNGs")
    parser.add_argument("--prefix", default="scaling_", help="file name prefix")


def make_plots(out: str, prefix: str = "scaling_", runs=None, curves=None, fit=None, log=print) -> list[str]:
    """Fits what the data allow (no bootstrap) and writes the PNGs; returns their paths."""
    from gopher_jax.scaling import plots
    from gopher_jax.scaling.approach1 import fit_approach1
    from gopher_jax.scaling.approach2 import fit_approach2
    from gopher_jax.scaling.approach3 import fit_approach3
    from gopher_jax.scaling.optimal import published

    paths = [plots.plot_frontier(os.path.join(out, f"{prefix}frontier.png"), fit)]
    law = published()["3"]
    if runs is not None:
        try:
            f2 = fit_approach2(runs, n_boot=0)
            paths.append(plots.plot_isoflop(runs, {**f2.params, **f2.extra}, os.path.join(out, f"{prefix}isoflop.png")))
        except ValueError as e:
            log(f"isoflop plot skipped: {e}")
        try:
            fitted = fit_approach3(runs, n_boot=0).params
            if all(np.isfinite(fitted[k]) for k in ("E", "A", "B", "a")) and 0 < fitted["alpha"] < 5:
                law = fitted
            else:
                log(f"approach 3 fit is degenerate ({ {k: round(fitted[k], 4) for k in ('alpha', 'beta')} }); "
                    f"contours use the published law")
        except ValueError as e:
            log(f"approach 3 fit failed, contours use the published law: {e}")
        paths.append(plots.plot_contours(law, os.path.join(out, f"{prefix}contours.png"), runs))
    if curves is not None:
        try:
            f1 = fit_approach1(curves, n_boot=0)
            paths.append(plots.plot_envelope(curves, {**f1.params, **f1.extra},
                                             os.path.join(out, f"{prefix}envelope.png")))
        except ValueError as e:
            log(f"envelope plot skipped: {e}")
    return paths


def run(args: argparse.Namespace) -> int:
    """Writes the plots; returns 0."""
    from gopher_jax.scaling.optimal import load_fit

    paths = make_plots(args.out, args.prefix, read_csv(args.runs) if args.runs else None,
                       read_csv(args.curves) if args.curves else None, load_fit(args.fit) if args.fit else None)
    for p in paths:
        print(p)
    return 0
