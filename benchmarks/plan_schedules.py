"""`gopher-jax plan` of a pipelined TPU recipe under each pipeline schedule: memory per device,
executed and formula pipeline efficiency, communication and predicted step time.

    python benchmarks/plan_schedules.py [--recipe gopher_280b_v3] \
        [--schedules gpipe,1f1b,interleaved_1f1b:2,zero_bubble,zero_bubble@none]

For each schedule (`name`, `name:repeats`, or `zero_bubble@<policy>` for pipeline.zero_bubble_remat), runs `gopher-jax plan --gin_file=gin_configs/parallel/<recipe>.gin
--topology=<the topology its header names> --json --gin_param=pipeline.schedule='<name>'
--gin_param=pipeline.repeats=<repeats, 1 if not given> [--gin_param=pipeline.zero_bubble_remat='<policy>']` in a
fresh process (op costs compiled on this CPU:
~30 s each) and writes benchmarks/results/plan_schedules_<recipe>.json: `host` (benchmarks/host_info.py),
`recipe_bindings` (the recipe as it was, with its hash: benchmarks/compile_recipes.py), and per schedule
its command and plan report. These are plan's predictions, not measurements of a TPU;
benchmarks/render_docs.py renders the schedule table of docs/decisions/0002-pipeline.md and the
schedule note of the recipe from them, and the results file goes stale like a compile result when the
recipe's bindings change.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.compile_recipes import REPO, recipe_bindings, recipe_topologies  # noqa: E402
from benchmarks.host_info import host_info  # noqa: E402

SCHEDULES = "gpipe,1f1b,interleaved_1f1b:2,zero_bubble,zero_bubble@none"


def plan_schedule(recipe: str, topology: str, schedule: str, repeats: int, zb_remat: str = "") -> dict:
    cmd = [sys.executable, "-m", "gopher_jax.cli", "plan", f"--gin_file=gin_configs/parallel/{recipe}.gin",
           f"--topology={topology}", "--json", f"--gin_param=pipeline.schedule='{schedule}'",
           f"--gin_param=pipeline.repeats={repeats}"]
    if zb_remat:
        cmd.append(f"--gin_param=pipeline.zero_bubble_remat='{zb_remat}'")
    env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode not in (0, 1):   # 1 = does not fit: still a result
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    report = json.loads(proc.stdout[proc.stdout.index("{"):])
    return {"schedule": schedule, "repeats": repeats, "zero_bubble_remat": zb_remat or None, "command": " ".join(cmd[2:]), "wall_s": time.perf_counter() - t0,
            "report": report}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default="gopher_280b_v3")
    p.add_argument("--schedules", default=SCHEDULES, help="comma-separated name or name:repeats")
    p.add_argument("--out_dir", default=os.path.join(REPO, "benchmarks", "results"))
    args = p.parse_args(argv)
    topology = recipe_topologies()[args.recipe]
    bindings = recipe_bindings(args.recipe)
    host = host_info()
    rows = []
    for item in args.schedules.split(","):
        item_name, _, zb_remat = item.partition("@")
        name, _, repeats = item_name.partition(":")
        rows.append(plan_schedule(args.recipe, topology, name, int(repeats or 1), zb_remat))
        r = rows[-1]["report"]
        print(f"{item}: {r['bytes_per_device'] / 2**30:.2f} GiB/device, executed {r['pipeline_efficiency']:.3f}, "
              f"step {r['predicted_step_s']:.1f} s", flush=True)
    path = os.path.join(args.out_dir, f"plan_schedules_{args.recipe}.json")
    with open(path, "w") as f:
        json.dump({"recipe": args.recipe, "topology": topology, "host": host, "recipe_bindings": bindings,
                   "schedules": rows}, f, indent=1)
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
