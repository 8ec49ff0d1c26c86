"""ZB-H1's compiled memory against 1F1B's on a TPU topology (ahead of time, on this CPU host).

The question it answers (issue 28, ADR 0002): on XLA:CPU a ZB-H1 step keeps each weight-gradient set
twice, the buffer and the copy XLA makes when a pipeline slot writes into it, so its compiled
temporaries are ~3.75x 1F1B's on the toy of tests/parallel/test_pipeline_memory.py. Does the TPU
compiler make the same copy? This compiles the same toy pipelined step (8 layers x 64 wide, remat
'full', XLA attention and matmuls, 2 stages x 4-way data, seq 32, 16 rows per microbatch, 4
microbatches) for 1F1B and for ZB-H1 with K = 1 and 2 weight-gradient sets, and K = 1 with
pipeline.zero_bubble_remat='none' (R keeps the stage's full residuals, I recomputes nothing), on the host CPU (8
emulated devices) and on a TPU topology of 8 devices (libtpu: `pip install -e '.[tpu]'`), and writes
each temp size and the ZB-H1 / 1F1B ratios, with the set sizes of the executor's own layouts.

    python benchmarks/pipeline_memory_tpu.py --topology v4:2x2x2 --json benchmarks/results/pipeline_memory_tpu.json

(The CPU side needs 8 host devices: the script sets XLA_FLAGS before importing jax.)
"""
from __future__ import annotations

import argparse
import json
import os
import sys

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

SEQ, ROWS, STAGES, DATA, MICROBATCHES = 32, 16, 2, 4, 4
KEYS = ("inputs", "targets", "loss_weights", "segment_ids", "positions")
RUNS = (("1f1b", 1, "model"), ("zero_bubble", 1, "model"), ("zero_bubble", 2, "model"),
        ("zero_bubble", 1, "none"))  # (schedule, weight-gradient sets K, pipeline.zero_bubble_remat)


def toy_config():
    """The toy ModelConfig of tests/parallel/test_pipeline_memory.py."""
    from gopher_jax.model.config import ModelConfig

    return ModelConfig(num_layers=8, d_model=64, num_heads=4, head_dim=16, vocab_size=256, max_len=32,
                       remat_policy="full", attention_impl="xla", matmul_impl="xla")


def compile_temps(devices) -> dict:
    """Returns {"<schedule>_k<K>[_remat_none]": compiled temp bytes per device} for RUNS on a 2 x 4 mesh of
    `devices`."""
    import flax.linen as nn
    import jax

    from gopher_jax.parallel.mesh import MeshConfig, build_mesh
    from gopher_jax.parallel.pipeline import Pipeline, PipelineConfig
    from gopher_jax.parallel.rules import DEFAULT_RULES, batch_sharding, param_shardings
    from gopher_jax.train.state import abstract_params

    cfg = toy_config()
    rules = tuple(("layers", "pipeline") if k == "layers" else (k, v) for k, v in DEFAULT_RULES)
    mesh = build_mesh(MeshConfig(data=DATA, pipeline=STAGES), devices)
    boxed = abstract_params(cfg, SEQ)
    params = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          nn.meta.unbox(boxed), param_shardings(boxed, mesh, rules))
    b_sh = batch_sharding(mesh, rules)
    batch = {k: jax.ShapeDtypeStruct((ROWS * MICROBATCHES, SEQ), "float32" if k == "loss_weights" else "int32",
                                     sharding=b_sh) for k in KEYS}
    out = {}
    for schedule, k, zb_remat in RUNS:
        pipe = Pipeline(cfg, PipelineConfig(schedule=schedule, max_pending_weight_grads=k, zero_bubble_remat=zb_remat),
                        STAGES, MICROBATCHES, 0.0)
        name = f"{schedule}_k{k}" + ("" if zb_remat == "model" else f"_remat_{zb_remat}")
        with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
            step = jax.jit(lambda p, b, pipe=pipe: pipe(p, b, 1.0)).lower(params, batch).compile()
        out[name] = int(step.memory_analysis().temp_size_in_bytes)
        print(f"  {name}: temp {out[name]:,} B", flush=True)
    return out


def set_bytes(remat: str = "full") -> dict:
    """Bytes on one device of one residual set, weight-gradient set and stage gradients (the executor's
    layouts) of the toy's stages under `remat`."""
    from gopher_jax.parallel.pipeline import compiled_op_costs

    cfg = toy_config().replace(remat_policy=remat)
    return compiled_op_costs.stage_set_bytes(cfg, SEQ, ROWS // DATA, cfg.num_layers // STAGES)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--topology", default="v4:2x2x2", help="a TPU topology of 8 devices (plan/topology.py)")
    parser.add_argument("--json", default="", help="write the result here")
    args = parser.parse_args(argv)

    import jax

    from gopher_jax.plan.aot import topology_devices
    from gopher_jax.plan.topology import parse_topology
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from host_info import host_info

    topology = parse_topology(args.topology)
    tpu_devices = topology_devices(topology)
    if len(tpu_devices) != STAGES * DATA:
        raise SystemExit(f"--topology {args.topology} has {len(tpu_devices)} devices; the toy mesh needs "
                         f"{STAGES * DATA} (e.g. v4:2x2x2 or v5e:2x4)")
    result = {"host": host_info(), "topology": args.topology, "toy": {
        "layers": 8, "d_model": 64, "remat_policy": "full", "stages": STAGES, "data": DATA, "seq_len": SEQ,
        "rows_per_microbatch": ROWS, "microbatches": MICROBATCHES}, "set_bytes_per_device": set_bytes(),
        "set_bytes_per_device_remat_none": set_bytes("none")}
    for name, devices in (("cpu", jax.devices("cpu")[:STAGES * DATA]), ("tpu", tpu_devices)):
        print(f"{name}:", flush=True)
        temps = compile_temps(devices)
        result[name] = {"temp_bytes": temps,
                        "zb_over_1f1b": {k: round(v / temps["1f1b_k1"], 3) for k, v in temps.items()
                                         if k.startswith("zero_bubble")}}
    print(json.dumps({k: result[k] for k in ("cpu", "tpu", "set_bytes_per_device", "set_bytes_per_device_remat_none")},
                     indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
