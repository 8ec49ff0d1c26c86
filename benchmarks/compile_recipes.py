"""Ahead-of-time compile of each TPU recipe on this CPU host: memory per device against `plan`,
compile time and the compile's host memory.

    python benchmarks/compile_recipes.py [--recipes gopher_1_4b_v4,gopher_7_1b_v4] [--out_dir benchmarks/results]

For each recipe, runs `gopher-jax compile --gin_file=gin_configs/parallel/<recipe>.gin
--topology=<the topology its header names> --json` in a fresh process (gopher_jax/plan/compile_cli.py: the real train
step lowered and compiled for the TPU topology through libtpu; no chip is opened) and writes
benchmarks/results/compile_<recipe>.json: that report, the topology, `peak_rss_bytes` of the compile
process, `wall_s` of the whole command, `host` (CPU model, cores, load, date, commit, jax and
libtpu versions; benchmarks/host_info.py) and `recipe_bindings`: the gin file, the files it includes and its
effective bindings with their SHA-256 (`recipe_bindings` below). benchmarks/render_docs.py renders
the recipe table of gin_configs/parallel/README.md and the recipe headers from these files.

A result is keyed by its recipe: when a recipe's bindings (its own or an included file's) or the
topology its header names change, its result is stale (`stale_results`; tests/docs/test_docs_figures.py
fails naming the bindings that changed) until this script is rerun for it. Comments are not bindings:
re-rendering a header leaves the hash alone.

Compile time depends on the host and its load (the report records the 1-minute load average).
"""
from __future__ import annotations

import argparse
import glob
import hashlib
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


def recipe_topologies(root: str = REPO) -> dict[str, str]:
    """Each TPU recipe (gin_configs/parallel/<model>_v*.gin) -> the topology its header's commands name."""
    out = {}
    for path in sorted(glob.glob(os.path.join(root, "gin_configs", "parallel", "*_v*.gin"))):
        with open(path) as f:
            found = re.findall(r"--topology=(\S+)", f.read())
        if not found:
            raise ValueError(f"{path}: its header names no --topology (e.g. `gopher-jax plan ... --topology=v4:2x2x1`)")
        out[os.path.basename(path)[:-4]] = found[0]
    return out


def recipe_bindings(recipe: str, root: str = REPO) -> dict:
    """The effective gin bindings of gin_configs/parallel/<recipe>.gin under `root`, parsed, not run.

    Returns {"gin_file", "includes" (in include order), "bindings" ({"[scope/]selector.param": repr of
    the value}, a later binding overriding an earlier one, as gin does), "sha256" (of the sorted
    bindings)}. Gin's own parser reads the files; nothing is imported or bound, so the result does not
    depend on the configurables' code, only on what the recipe and its includes write.
    """
    from gin import config_parser

    class Delegate(config_parser.ParserDelegate):
        def configurable_reference(self, name, evaluate):
            return _Literal(f"@{name}{'()' if evaluate else ''}")

        def macro(self, name):
            return _Literal(f"%{name}")

    gin_file = f"gin_configs/parallel/{recipe}.gin"
    includes: list[str] = []
    bindings: dict[str, str] = {}

    def parse(rel: str, seen: tuple[str, ...]) -> None:
        if rel in seen:
            raise ValueError(f"include cycle: {' -> '.join(seen + (rel,))}")
        with open(os.path.join(root, rel), encoding="utf-8") as f:
            text = f.read()
        for statement in config_parser.ConfigParser(text, Delegate()):
            if isinstance(statement, config_parser.IncludeStatement):
                includes.append(statement.filename)
                parse(statement.filename, seen + (rel,))
            elif isinstance(statement, config_parser.BindingStatement):
                key = f"{statement.selector}.{statement.arg_name}"
                key = f"{statement.scope}/{key}" if statement.scope else key
                bindings.pop(key, None)   # re-inserted last, so the dict reads in effective order
                bindings[key] = repr(statement.value)

    parse(gin_file, ())
    digest = hashlib.sha256(json.dumps(sorted(bindings.items())).encode()).hexdigest()
    return {"gin_file": gin_file, "includes": includes, "bindings": bindings, "sha256": digest}


class _Literal(str):
    """A configurable reference or macro, kept as the text the recipe writes."""
    def __repr__(self) -> str:
        return str(self)


def stale_results(root: str = REPO) -> list[str]:
    """One line per result under benchmarks/results/ keyed by a recipe (`compile_<recipe>.json` from this
    script, `plan_schedules_<recipe>.json` from benchmarks/plan_schedules.py) whose recipe changed since it
    ran: the recipe is gone, its bindings hash differs (naming the bindings that differ), or its header
    names another topology. Reads files only; nothing is compiled."""
    topologies = recipe_topologies(root)
    out = []
    results = sorted(glob.glob(os.path.join(root, "benchmarks", "results", "compile_*.json")))
    results += sorted(glob.glob(os.path.join(root, "benchmarks", "results", "plan_schedules_*.json")))
    for path in results:
        with open(path, encoding="utf-8") as f:
            result = json.load(f)
        name, recipe = os.path.relpath(path, root), result.get("recipe")
        script = "compile_recipes.py --recipes" if "report" in result else "plan_schedules.py --recipe"
        rerun = f"rerun python benchmarks/{script} {recipe}"
        if recipe not in topologies:
            out.append(f"{name}: gin_configs/parallel/{recipe}.gin is not a recipe any more (delete the result)")
            continue
        topology = result["report"]["topology"] if "report" in result else result["topology"]
        if topology != topologies[recipe]:
            out.append(f"{name}: compiled for {topology}, the recipe names {topologies[recipe]} ({rerun})")
        stored = result.get("recipe_bindings")
        if not isinstance(stored, dict) or "sha256" not in stored:
            out.append(f"{name}: records no recipe bindings hash ({rerun})")
            continue
        now = recipe_bindings(recipe, root)
        if stored["sha256"] != now["sha256"]:
            old, new = stored.get("bindings", {}), now["bindings"]
            changed = [f"{k}: {old.get(k, '(unset)')} -> {new.get(k, '(unset)')}"
                       for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
            out.append(f"{name}: the recipe's bindings changed since it ran (sha256 "
                       f"{stored['sha256'][:12]} -> {now['sha256'][:12]}: {'; '.join(changed) or 'see the recipe'}) "
                       f"({rerun})")
    return out


def compile_recipe(recipe: str, topology: str) -> dict:
    """Compiles one recipe in a child process; returns its compile report plus host, RSS and wall time."""
    cmd = [sys.executable, "-m", "gopher_jax.cli", "compile", f"--gin_file=gin_configs/parallel/{recipe}.gin",
           f"--topology={topology}", "--json"]
    env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
    host = host_info()
    bindings = recipe_bindings(recipe)   # before the compile: the recipe the compile reads
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
            "peak_rss_bytes": peak_rss, "host": host, "recipe_bindings": bindings}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    topologies = recipe_topologies()
    p.add_argument("--recipes", default=",".join(topologies),
                   help="comma-separated recipe names (gin_configs/parallel/<name>.gin)")
    p.add_argument("--out_dir", default=os.path.join(REPO, "benchmarks", "results"))
    args = p.parse_args(argv)
    unknown = [r for r in args.recipes.split(",") if r not in topologies]
    if unknown:  # before minutes of compiling, not after
        p.error(f"unknown recipe(s) {', '.join(map(repr, unknown))}; known: {', '.join(topologies)}")
    os.makedirs(args.out_dir, exist_ok=True)
    for recipe in args.recipes.split(","):
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
