"""`gopher-jax plan`: analytic memory per device and step time of a gin config on a TPU topology."""
from __future__ import annotations

import argparse
import json
import os

from gopher_jax import gin_utils

GIB = 2**30


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `gopher-jax plan`."""
    gin_utils.add_gin_arguments(parser)
    parser.add_argument("--topology", required=True, help="e.g. v3:32x32, v4:2x2x1, or 4xv3:32x32 (4 slices)")
    parser.add_argument("--mfu", type=float, default=0.4, help="model-FLOPs utilisation assumed for step time (train/mfu.py's "
                        "definition: 'model_causal' FLOPs over the chips' bf16 spec peak)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--pipeline_costs", choices=("compiled", "analytic"), default="compiled",
                        help="op costs of the pipeline's executed-cost model: compile each stage branch on CPU "
                             "and read XLA's cost analysis (default), or unit costs (instant)")


def make_plan(gin_files, gin_params, topology: str, mfu: float = 0.4, pipeline_costs: str = "compiled") -> dict:
    """Returns the plan dict: bytes_per_device (+ breakdown), hbm_bytes_per_device, FLOPs, bubble, step time."""
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # abstract shapes only; never touch an accelerator
    from gopher_jax.plan import configs, memory, run_time, throughput
    from gopher_jax.plan.topology import mesh_axis_sizes, parse_topology

    topo = parse_topology(topology)
    model, opt, train, mesh_cfg, rules = configs.load(gin_files, gin_params)
    sizes = mesh_axis_sizes(mesh_cfg, topo)
    from gopher_jax.parallel.pipeline import PipelineConfig
    pipeline = PipelineConfig()  # gin `pipeline.*` (used only when the mesh has pipeline > 1)
    scheduled = throughput.pipeline_schedule(model, train, sizes["pipeline"], pipeline, pipeline_costs)
    mem = memory.bytes_per_device(model, opt, train, rules, sizes, pipeline, scheduled[0])
    from gopher_jax.plan.communication import step_communication
    dcn = dict(zip(("data", "fsdp", "tensor", "pipeline"), mesh_cfg.dcn_shape))
    layer_params = (mem["global_params"] - model.padded_vocab_size * model.d_model) / model.num_layers
    comm = step_communication(model, train, sizes, dcn, topo, layer_params, 2 if model.param_dtype == "bfloat16" else 4,
                              scheduled[0])
    step = throughput.step_estimate(model, train, topo, sizes["pipeline"], mfu, pipeline, pipeline_costs,
                                    scheduled, comm)
    hbm = topo.chip.hbm_bytes_per_device
    return {"topology": topology, "num_devices": topo.num_devices, "num_chips": topo.num_chips, "mesh": sizes,
            "remat_policy": model.remat_policy, "microbatches": train.microbatches,
            "zero_bubble_remat": pipeline.zero_bubble_remat if sizes["pipeline"] > 1 else None,
            "bytes_per_device": mem["total"], "bytes_breakdown": mem["breakdown"], "hbm_bytes_per_device": hbm,
            "fits": mem["total"] <= hbm, "state_bytes_per_param": mem["state_bytes_per_param"],
            "mtnlg_bytes_per_param": mem["mtnlg_bytes_per_param"], "global_params": mem["global_params"],
            "local_params": mem["local_params"], "activation_detail": mem["activation_detail"],
            "memory_caveats": memory_caveats(step), **step,
            **run_time.run_estimate(train, step, topo.num_chips)}


def memory_caveats(step: dict) -> list[str]:
    """What the plan's memory figure is known not to cover, one sentence each (empty: nothing known).
    A zero-bubble W run in several layer groups: the 280B recipe's program with W in up to 10 parts
    compiled to 22.42 GiB per v3 core against 13.47 planned (docs/decisions/0002-pipeline.md; a small
    toy's W-part programs compile smaller than W whole, so the count is not simply short by a set),
    so such a plan says its total is unvalidated."""
    parts = step["pipeline_w_parts"]
    if parts > 1:
        return [f"zero_bubble runs each W in {parts} layer groups: this memory figure is not validated for W in "
                "parts (the 280B recipe's such program compiled to 1.7x it; docs/decisions/0002-pipeline.md); "
                "check it with `gopher-jax compile`, or keep W whole with pipeline.max_w_parts=1"]
    return []


def format_plan(p: dict) -> str:
    """Returns the human-readable table of a plan dict."""
    lines = [f"topology {p['topology']}: {p['num_chips']} chips, {p['num_devices']} devices; mesh {p['mesh']}",
             f"params {p['global_params'] / 1e9:.2f}B, {p['local_params'] / 1e6:.1f}M per device; "
             f"remat={p['remat_policy']}, microbatches={p['microbatches']}",
             "memory per device:"]
    lines += [f"  {k:<14} {v / GIB:9.2f} GiB" for k, v in p["bytes_breakdown"].items()]
    lines += [f"  {'total':<14} {p['bytes_per_device'] / GIB:9.2f} GiB of {p['hbm_bytes_per_device'] / GIB:.0f} GiB "
              f"HBM -> {'fits' if p['fits'] else 'DOES NOT FIT'}",
              *(f"  caveat: {c}" for c in p["memory_caveats"]),
              f"state bytes/param {p['state_bytes_per_param']:.1f} (MT-NLG mixed-precision Adam: "
              f"{p['mtnlg_bytes_per_param']})",
              f"FLOPs/step {p['model_flops_per_step']:.3e} model ({p['mfu_count']}), {p['hardware_flops_per_step']:.3e} "
              f"executed (full T x T scores, with remat); "
              f"{p['flops_per_device']:.3e} per device",
              _pipeline_line(p),
              f"pipeline bubble {p['pipeline_bubble']:.1%}; predicted {p['predicted_step_s']:.2f} s/step "
              f"(compute {p['compute_s']:.2f} + communication {p['communication_s']:.2f}), "
              f"{p['predicted_tokens_per_s']:,.0f} tokens/s at MFU {p['mfu']:.0%} ({p['mfu_count']} FLOPs / bf16 spec peak)"]
    from gopher_jax.plan.run_time import format_run_estimate
    lines.append(format_run_estimate(p))  # the whole run: step time x steps (plan/run_time.py)
    return "\n".join(lines)


def _pipeline_line(p: dict) -> str:
    comm = "; ".join(f"{k} {v['seconds']:.3f} s" for k, v in p["communication"].items())
    comm = f"communication {p['communication_s']:.2f} s ({comm}; bandwidths and sources in --json)"
    if p["pipeline_schedule"] is None:
        return "pipeline: none (1 stage); " + comm
    return (f"pipeline {p['pipeline_schedule']} ({p['pipeline_placement']} placement): executed efficiency "
            f"{p['pipeline_efficiency']:.1%} (slot cost = slowest device, {p['pipeline_op_costs']} op costs), "
            f"formula {p['pipeline_efficiency_formula']:.1%}; stage recompute x{p['pipeline_recompute_factor']:.3f}"
            f"\n{comm}")


def run(args: argparse.Namespace) -> int:
    """Prints the plan; returns 0, or 1 if it does not fit in HBM."""
    plan = make_plan(args.gin_file, args.gin_param, args.topology, args.mfu, args.pipeline_costs)
    print(json.dumps(plan, indent=1) if args.json else format_plan(plan))
    return 0 if plan["fits"] else 1
