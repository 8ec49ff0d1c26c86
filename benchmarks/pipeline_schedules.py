"""Executed efficiency of every pipeline schedule at compiled op costs, beside the formula.

For each model (a gin file of gin_configs/models), remat policy and (stages, microbatches) pair: the op costs
of one stage (gopher_jax/parallel/pipeline/compiled_op_costs.py: each branch compiled on this CPU, XLA's FLOP
count, the split backward's I and W included), then the executed efficiency of GPipe, 1F1B,
interleaved 1F1B (repeats 2; each placed for these costs: placement.py), ZB-H1 with one and two
weight-gradient sets (zero_bubble.py), by the lockstep cost model (cost.py: slot cost = slowest device).
No step is run: these are FLOP-priced programs, not wall-clock times (on one CPU host the emulated
devices share the cores, so wall-clock cannot show a bubble).

    python benchmarks/pipeline_schedules.py --models gopher_44m,gopher_7_1b --seq_len 2048 \
        --json benchmarks/results/pipeline_schedules.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

ROWS = ((2, 4), (4, 12), (4, 32), (8, 32))


def model_config(name: str):
    """ModelConfig of gin_configs/models/<name>.gin."""
    import gin

    from gopher_jax.model.config import ModelConfig

    gin.clear_config()
    gin.parse_config_files_and_bindings([os.path.join("gin_configs", "models", f"{name}.gin")], [])
    return ModelConfig()


def measure(name: str, seq_len: int, rows, remat: str = "none") -> dict:
    """Op costs (forward units) and executed efficiencies of one model at each (stages, microbatches)."""
    from gopher_jax.parallel.pipeline import compiled_op_costs, cost, placement, schedule, zero_bubble

    base = model_config(name).replace(remat_policy=remat)
    out = {"model": name, "remat_policy": remat, "seq_len": seq_len, "rows": []}
    for pp, mb in rows:
        layers = max(1, base.num_layers // pp)  # the model's own layers per stage (>= 1)
        cfg = base.replace(num_layers=layers * pp)
        t0 = time.time()
        plain = compiled_op_costs.measured_costs(cfg, seq_len, layers)
        split = compiled_op_costs.measured_costs(cfg, seq_len, layers, split=True)
        unit = plain("F", "mid")
        row = {"stages": pp, "microbatches": mb, "layers_per_stage": layers,
               "op_costs_forward_units": {k: round(split(k, "mid") / unit, 3) for k in ("F", "R", "V", "I", "W")},
               "costs_seconds": round(time.time() - t0, 1), "executed": {}, "formula": {}, "placement": {}}
        for s, r in (("gpipe", 1), ("1f1b", 1), ("interleaved_1f1b", 2)):
            costs = plain if r == 1 else compiled_op_costs.measured_costs(cfg, seq_len, max(1, layers // r))
            table = schedule.make_schedule(s, pp, mb, r, op_costs=costs)
            row["executed"][s] = round(cost.executed_efficiency(table, costs), 4)
            row["placement"][s] = table.placement
            row["formula"][s] = round(1 - schedule.expected_bubble(s, pp, mb, r), 4)
        for k in (1, 2):  # weight-gradient sets kept (pipeline.max_pending_weight_grads)
            table = schedule.make_schedule("zero_bubble", pp, mb, op_costs=split, max_pending_w=k,
                                           w_parts=zero_bubble.part_choices(layers))
            row["executed"][f"zero_bubble_k{k}"] = round(cost.executed_efficiency(table, split), 4)
        row["formula"]["zero_bubble"] = round(1 - schedule.expected_bubble("zero_bubble", pp, mb), 4)
        one = schedule.make_schedule("1f1b", pp, mb)
        row["executed"]["1f1b_issue18_executor"] = round(
            cost.executed_efficiency(one, plain, placement.fused_backward(one)), 4)
        row["executed"]["1f1b_hoisted_only"] = round(cost.executed_efficiency(
            schedule.make_schedule("1f1b", pp, mb, placement_name="hoisted"), plain), 4)
        out["rows"].append(row)
        print(f"{name} remat {remat} P={pp} MB={mb}: " + ", ".join(f"{k} {v:.3f}" for k, v in row["executed"].items())
              + f" | op costs {row['op_costs_forward_units']}", flush=True)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="gopher_44m", help="comma-separated gin_configs/models names")
    parser.add_argument("--seq_len", type=int, default=2048)
    parser.add_argument("--remat", default="none,full", help="comma-separated ModelConfig.remat_policy values")
    parser.add_argument("--json", default="", help="write the results here")
    args = parser.parse_args(argv)
    results = [measure(m, args.seq_len, ROWS, remat) for m in args.models.split(",") for remat in args.remat.split(",")]
    if args.json:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from host_info import host_info  # where and when (FLOP-priced programs: the host sets no number here)
        os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"host": host_info(), "results": results, "cost_model": "gopher_jax/parallel/pipeline/cost.py"},
                      f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
