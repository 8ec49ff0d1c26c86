"""Ahead-of-time compile of the real train step for a TPU topology, on a CPU host (libtpu needed).

The mesh is built by `build_mesh` over the devices of `jax.experimental.topologies`; the state and
batch are abstract (`jax.ShapeDtypeStruct` with the trainer's shardings), so nothing is allocated.
"""
from __future__ import annotations

import os
import time

import jax

from gopher_jax.parallel.mesh import build_mesh
from gopher_jax.plan.topology import Topology


def topology_devices(topology: Topology):
    """Returns the TPU devices of a topology description; raises RuntimeError if libtpu is missing."""
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")  # keeps libtpu from probing metadata
    # No TPU is opened, so the lock libtpu takes against a second user of the chips is not needed;
    # without this, any other jax process on the host that loaded libtpu makes the compile fail.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    from jax.experimental import topologies

    try:
        options = dict(topology.chip.aot_options)
        if topology.num_slices > 1:
            options["num_slices"] = topology.num_slices
        desc = topologies.get_topology_desc(topology.name, "tpu", **options)
    except Exception as e:  # jax raises several types when the TPU plugin is absent
        raise RuntimeError(f"cannot describe TPU topology {topology.name!r} ({type(e).__name__}: {e}). "
                           f"Ahead-of-time TPU compiles need libtpu: pip install -e '.[tpu]'") from e
    return desc.devices


def compile_train_step(model, opt, train, mesh_config, rules, topology: Topology) -> dict:
    """Returns {"memory": memory_analysis fields, "flops_per_device", "xla_flops_once", "loops",
    "uncounted_loops", "compile_s", "num_devices", "mesh"}.

    `flops_per_device` counts every loop body (layer scan, microbatches, pipeline slots) times its
    trip count (plan/hlo_cost.py), or is None when a loop's trip count cannot be read; it is an upper
    bound (`flops_upper_bound`) when a conditional's branches differ in cost, as a pipeline slot's
    do; `xla_flops_once` is XLA's own cost analysis, which counts each loop body once."""
    from gopher_jax.train.sharded import build_trainer
    from gopher_jax.train.step import BATCH_KEYS

    devices = topology_devices(topology)
    mesh = build_mesh(mesh_config, devices)
    trainer = build_trainer(model, opt, train, mesh, rules)
    state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                         trainer.abstract_state, trainer.state_shardings)
    dtypes = {"loss_weights": jax.numpy.float32}
    batch = {k: jax.ShapeDtypeStruct((train.batch_size, train.seq_len), dtypes.get(k, jax.numpy.int32),
                                     sharding=trainer.batch_sharding) for k in BATCH_KEYS}
    t0 = time.perf_counter()
    with trainer.context():
        compiled = trainer.train_step.lower(state, batch).compile()
    compile_s = time.perf_counter() - t0
    m = compiled.memory_analysis()
    memory = {k: int(getattr(m, k)) for k in ("argument_size_in_bytes", "output_size_in_bytes",
                                              "alias_size_in_bytes", "temp_size_in_bytes",
                                              "generated_code_size_in_bytes")}
    # Live at the peak: inputs + outputs not aliased to (donated) inputs + scratch.
    memory["total"] = (memory["argument_size_in_bytes"] + memory["output_size_in_bytes"]
                       - memory["alias_size_in_bytes"] + memory["temp_size_in_bytes"])
    from gopher_jax.plan.hlo_cost import loop_aware_flops

    counted = loop_aware_flops(compiled.as_text())
    return {"memory": memory, "flops_per_device": counted["flops"], "xla_flops_once": counted["flops_once"],
            "loops": counted["loops"], "uncounted_loops": counted["uncounted_loops"],
            "flops_upper_bound": counted["upper_bound"], "compile_s": compile_s,
            "num_devices": len(devices), "mesh": dict(mesh.shape)}
