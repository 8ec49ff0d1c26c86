"""Ahead-of-time compile of each TPU recipe on this CPU host: memory per device against `plan`,
compile time and the compile's host memory.

    python benchmarks/compile_recipes.py [--recipes gopher_1_4b_v4,gopher_7_1b_v4] [--out_dir benchmarks/results]

For each recipe, runs `gopher-jax compile --gin_file=gin_configs/parallel/<recipe>.gin
--topology=<the topology its header names> --json` in a fresh process (gopher_jax/plan/compile_cli.py: the real train
step lowered and compiled for the TPU topology through libtpu; no chip is opened) and writes
benchmarks/results/compile_<recipe>.json: that report, the topology, `peak_rss_bytes` of the compile
process, `wall_s` of the whole command, and `host` (CPU model, cores, load, date, commit, jax and
libtpu versions; benchmarks/host_info.py). benchmarks/render_docs.py renders the recipe table of
gin_configs/parallel/README.md and the recipe headers from these files.

Compile time depends on the host and its load (the report records the 1-minute load average).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.host_info import host_info  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def recipe_topologies() -> dict[str, str]:
    """Each TPU recipe (gin_configs/parallel/<model>_v*.gin) -> the topology its header's commands name."""
    out = {}
    for path in sorted(glob.glob(os.path.join(REPO, "gin_configs", "parallel", "*_v*.gin"))):
        with open(path) as f:
            found = re.findall(r"--topology=(\S+)", f.read())
        if not found:
            raise ValueError(f"{path}: its header names no --topology (e.g. `gopher-jax plan ... --topology=v4:2x2x1`)")
        out[os.path.basename(path)[:-4]] = found[0]
    return out


def compile_recipe(recipe: str, topology: str) -> dict:
    """Compiles one recipe in a child process; returns its compile report plus host, RSS and wall time."""
    cmd = [sys.executable, "-m", "gopher_jax.cli", "compile", f"--gin_file=gin_configs/parallel/{recipe}.gin",
           f"--topology={topology}", "--json"]
    env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
    host = host_info()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t0
    # communicate() reaped the child; its peak RSS is the largest child's so far in this process,
    # which is this one's when recipes are compiled one per invocation or in increasing size.
    peak_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    if proc.returncode not in (0, 1):   # 1 = compiled but does not fit: still a result
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{stderr[-3000:]}")
    report = json.loads(stdout[stdout.index("{"):])
    return {"recipe": recipe, "command": " ".join(cmd[2:]), "report": report, "wall_s": wall,
            "peak_rss_bytes": peak_rss, "host": host}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    topologies = recipe_topologies()
    p.add_argument("--recipes", default=",".join(topologies),
                   help="comma-separated recipe names (gin_configs/parallel/<name>.gin)")
    p.add_argument("--out_dir", default=os.path.join(REPO, "benchmarks", "results"))
    args = p.parse_args(argv)
    for recipe in args.recipes.split(","):
        if recipe not in topologies:
            p.error(f"unknown recipe {recipe!r}; known: {', '.join(topologies)}")
        result = compile_recipe(recipe, topologies[recipe])
        path = os.path.join(args.out_dir, f"compile_{recipe}.json")
        with open(path, "w") as f:
            json.dump(result, f, indent=1)
        r = result["report"]
        print(f"{recipe} on {r['topology']}: {r['bytes_per_device'] / 2**30:.2f} GiB/device "
              f"(plan {r['plan_bytes_per_device'] / 2**30:.2f}), compile {r['compile_s']:.0f} s -> {path}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
