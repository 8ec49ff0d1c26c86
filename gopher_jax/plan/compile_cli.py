"""`gopher-jax compile`: compile the real train step for a TPU topology and compare with `plan`."""
from __future__ import annotations

import argparse
import json
import os

from gopher_jax import gin_utils

GIB = 2**30


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `gopher-jax compile`."""
    gin_utils.add_gin_arguments(parser)
    parser.add_argument("--topology", required=True, help="e.g. v4:2x2x1, v3:32x32, or 2xv4:2x2x1 (2 slices)")
    parser.add_argument("--mfu", type=float, default=0.4, help="MFU for the plan's predicted step time")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def compile_report(gin_files, gin_params, topology: str, mfu: float = 0.4) -> dict:
    """Returns bytes_per_device, hbm_bytes_per_device, flops_per_device, the plan's numbers and the gaps."""
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the host runs on CPU; TPU devices are only described
    from gopher_jax.plan import aot, configs
    from gopher_jax.plan.plan_cli import make_plan
    from gopher_jax.plan.topology import parse_topology

    topo = parse_topology(topology)
    plan = make_plan(gin_files, gin_params, topology, mfu)
    model, opt, train, mesh_cfg, rules = configs.load(gin_files, gin_params)
    result = aot.compile_train_step(model, opt, train, mesh_cfg, rules, topo)
    used, hbm = result["memory"]["total"], topo.chip.hbm_bytes_per_device
    counted = result["flops_per_device"]
    return {"topology": topology, "num_devices": result["num_devices"], "mesh": result["mesh"],
            "bytes_per_device": used, "memory_analysis": result["memory"], "hbm_bytes_per_device": hbm,
            "fits": used <= hbm, "flops_per_device": counted, "xla_flops_once": result["xla_flops_once"],
            "loops": result["loops"], "uncounted_loops": result["uncounted_loops"],
            "flops_upper_bound": result["flops_upper_bound"], "compile_s": result["compile_s"],
            "plan_bytes_per_device": plan["bytes_per_device"], "plan_bytes_breakdown": plan["bytes_breakdown"],
            "plan_flops_per_device": plan["flops_per_device"],
            "memory_gap": used / plan["bytes_per_device"] - 1,
            # None, not a number, when a loop could not be counted or the count is only an upper bound
            # (pipeline slots branch on the schedule: each is counted at its costliest branch).
            "flops_gap": (None if counted is None or result["flops_upper_bound"]
                          else counted / plan["flops_per_device"] - 1),
            "predicted_step_s": plan["predicted_step_s"]}


def format_report(r: dict) -> str:
    """Returns the human-readable summary of a compile report."""
    m = r["memory_analysis"]
    return "\n".join([
        f"compiled for {r['topology']} ({r['num_devices']} devices, mesh {r['mesh']}) in {r['compile_s']:.1f} s",
        f"memory per device: {r['bytes_per_device'] / GIB:.2f} GiB of {r['hbm_bytes_per_device'] / GIB:.0f} GiB HBM "
        f"-> {'fits' if r['fits'] else 'DOES NOT FIT'} (arguments {m['argument_size_in_bytes'] / GIB:.2f}, "
        f"outputs {m['output_size_in_bytes'] / GIB:.2f}, aliased {m['alias_size_in_bytes'] / GIB:.2f}, "
        f"temporaries {m['temp_size_in_bytes'] / GIB:.2f} GiB)",
        f"plan said {r['plan_bytes_per_device'] / GIB:.2f} GiB: gap {r['memory_gap']:+.0%}",
        _flops_line(r),
        f"plan's predicted step time {r['predicted_step_s']:.2f} s"])


def _flops_line(r: dict) -> str:
    loops = ", ".join(f"{loop['trip_count']} x {loop['flops_per_trip']:.3e}" for loop in r["loops"])
    if r["flops_per_device"] is None:
        return (f"FLOPs per device: cannot count (the trip count of loop(s) {', '.join(r['uncounted_loops'])} is "
                f"not a constant; XLA's cost analysis, each loop body once: {r['xla_flops_once']:.3e}); "
                f"plan {r['plan_flops_per_device']:.3e}")
    if r["flops_upper_bound"]:
        return (f"FLOPs per device at most {r['flops_per_device']:.3e} (loop bodies x trip counts: {loops}; "
                f"each pipeline slot counted at its costliest branch, as XLA counts a conditional, so no gap is "
                f"computed); plan {r['plan_flops_per_device']:.3e}")
    return (f"FLOPs per device {r['flops_per_device']:.3e} (XLA cost analysis, loop bodies x trip counts"
            f"{': ' + loops if loops else ''}); plan {r['plan_flops_per_device']:.3e} (the executed count: "
            f"App. F, embedding as a gather, with recompute): gap {r['flops_gap']:+.1%}")


def run(args: argparse.Namespace) -> int:
    """Prints the report; returns 0, or 1 if the step does not fit in HBM."""
    report = compile_report(args.gin_file, args.gin_param, args.topology, args.mfu)
    print(json.dumps(report, indent=1) if args.json else format_report(report))
    return 0 if report["fits"] else 1
