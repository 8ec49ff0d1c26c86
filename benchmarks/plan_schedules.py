"""`gopher-jax plan` of a pipelined TPU recipe under each pipeline schedule: memory per device,
executed and formula pipeline efficiency, communication and predicted step time.

    python benchmarks/plan_schedules.py [--recipe gopher_280b_v3] \
        [--schedules gpipe,1f1b,interleaved_1f1b:2,zero_bubble,zero_bubble@none]

With `--gin_param=<binding>` (repeatable) every run gets that binding too, and `--tag=<tag>` writes
benchmarks/results/<tag>_<recipe>.json instead (e.g. --gin_param=pipeline.max_pending_weight_grads=2
--tag=zero_bubble_two_sets).
For each schedule (`name`, `name:repeats`, or `zero_bubble@<policy>` for pipeline.zero_bubble_remat), runs
`gopher-jax plan --gin_file=gin_configs/parallel/<recipe>.gin --topology=<the topology its header names> --json
--gin_param=pipeline.schedule='<name>' --gin_param=pipeline.repeats=<repeats, 1 if not given>
[--gin_param=pipeline.zero_bubble_remat='<policy>']` in a fresh process (op costs compiled on this CPU: ~30 s
each) and writes benchmarks/results/plan_schedules_<recipe>.json: `host` (benchmarks/host_info.py),
`recipe_bindings` (the recipe as it was, with its hash: benchmarks/compile_recipes.py), and per schedule its
command and plan report. These are plan's predictions, not measurements of a TPU. With `--compile=<items>` those
schedules are also compiled ahead of time for the topology (`gopher-jax compile`, the same gin params, ~3 min
each at 280B) and its XLA:TPU memory per device is stored beside plan's (`compiled`).
benchmarks/render_docs.py renders the schedule table of docs/decisions/0002-pipeline.md and the
schedule note of the recipe from them, and the results file goes stale like a compile result when the
recipe's bindings change.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.compile_recipes import REPO, recipe_bindings, recipe_topologies  # noqa: E402
from benchmarks.host_info import host_info  # noqa: E402

# XLA:TPU's refusal when a program's temporaries exceed HBM (its figures are GiB)
OUT_OF_HBM = re.compile(r"memory required for HLO temporaries \(([\d.]+)G\) exceeds available HBM \(([\d.]+)G\)")
SCHEDULES = "gpipe,1f1b,interleaved_1f1b:2,zero_bubble,zero_bubble@none,zero_bubble@dots_no_batch"


def _run(command: str, recipe: str, topology: str, schedule: str, repeats: int, zb_remat: str,
         extra: tuple = ()) -> tuple:
    """`gopher-jax <command> --json` of the recipe with the schedule overridden (and the `extra` gin bindings):
    (command line, report, wall s)."""
    cmd = [sys.executable, "-m", "gopher_jax.cli", command, f"--gin_file=gin_configs/parallel/{recipe}.gin",
           f"--topology={topology}", "--json", f"--gin_param=pipeline.schedule='{schedule}'",
           f"--gin_param=pipeline.repeats={repeats}"]
    cmd.append(f"--gin_param=pipeline.zero_bubble_remat='{zb_remat or 'model'}'")  # whatever the recipe sets
    cmd += [f"--gin_param={b}" for b in extra]
    env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    oom = OUT_OF_HBM.search(proc.stderr)
    if command == "compile" and oom:  # XLA refuses to compile a program whose temporaries exceed HBM: a result
        return " ".join(cmd[2:]), {"out_of_hbm": oom.group(0), "temp_bytes_required": float(oom.group(1)) * 2**30,
                                   "fits": False}, wall
    if proc.returncode not in (0, 1) or "{" not in proc.stdout:   # 1 = does not fit: still a result
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return " ".join(cmd[2:]), json.loads(proc.stdout[proc.stdout.index("{"):]), wall


def plan_schedule(recipe: str, topology: str, schedule: str, repeats: int, zb_remat: str = "",
                  compile_too: bool = False, extra: tuple = ()) -> dict:
    command, report, wall = _run("plan", recipe, topology, schedule, repeats, zb_remat, extra)
    row = {"schedule": schedule, "repeats": repeats, "zero_bubble_remat": zb_remat or None, "command": command,
           "wall_s": wall, "report": report}
    if compile_too:
        command, report, wall = _run("compile", recipe, topology, schedule, repeats, zb_remat, extra)
        row["compiled"] = {"command": command, "wall_s": wall, "fits": report["fits"],
                           **{k: report[k] for k in ("bytes_per_device", "memory_analysis", "out_of_hbm",
                                                     "temp_bytes_required") if k in report}}
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default="gopher_280b_v3")
    p.add_argument("--schedules", default=SCHEDULES, help="comma-separated name or name:repeats")
    p.add_argument("--out_dir", default=os.path.join(REPO, "benchmarks", "results"))
    p.add_argument("--compile", default="", help="comma-separated schedules (as in --schedules) to also compile "
                   "for the topology (AOT; host RAM at 280B: 9 GB with W whole, 22.5 GB with W in 10 parts)")
    p.add_argument("--gin_param", action="append", default=[], help="a gin binding added to every run "
                   "(repeatable), e.g. pipeline.max_pending_weight_grads=2; then --tag names the results file")
    p.add_argument("--tag", default="", help="results file <tag>_<recipe>.json instead of plan_schedules_<recipe>.json "
                   "(runs with --gin_param: not the recipe as it is, so not the file the docs' table renders)")
    args = p.parse_args(argv)
    topology = recipe_topologies()[args.recipe]
    bindings = recipe_bindings(args.recipe)
    host = host_info()
    rows = []
    for item in args.schedules.split(","):
        item_name, _, zb_remat = item.partition("@")
        name, _, repeats = item_name.partition(":")
        rows.append(plan_schedule(args.recipe, topology, name, int(repeats or 1), zb_remat,
                                  item in args.compile.split(","), tuple(args.gin_param)))
        r = rows[-1]["report"]
        compiled = rows[-1].get("compiled")
        print(f"{item}: {r['bytes_per_device'] / 2**30:.2f} GiB/device"
              + (f" (compiled {compiled.get('bytes_per_device', compiled.get('temp_bytes_required', 0)) / 2**30:.2f})"
                 if compiled else "")
              + f", executed {r['pipeline_efficiency']:.3f}, step {r['predicted_step_s']:.1f} s", flush=True)
    path = os.path.join(args.out_dir, f"{args.tag}_{args.recipe}.json" if args.tag else f"plan_schedules_{args.recipe}.json")
    with open(path, "w") as f:
        json.dump({"recipe": args.recipe, "topology": topology, "host": host, "recipe_bindings": bindings,
                   "extra_gin_params": args.gin_param, "schedules": rows}, f, indent=1)
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
