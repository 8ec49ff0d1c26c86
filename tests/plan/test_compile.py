"""`gopher-jax compile`: the real train step compiled for TPU v4:2x2x1 on this CPU host (libtpu).

Not skipped without libtpu: CI installs it through the `test` extra (jax[tpu]); a missing libtpu
fails with the install command in the message.
"""
import json

import pytest

from gopher_jax.cli import main

ARGS = ["--gin_file=gin_configs/runs/pretrain.gin", "--gin_file=gin_configs/models/tiny.gin",
        "--gin_file=gin_configs/parallel/fsdp_tensor.gin", "--gin_param=MeshConfig.data=1",
        "--gin_param=ModelConfig.num_layers=2", "--gin_param=train.seq_len=128",
        # unrolled layers: XLA's cost analysis counts a while-loop (scan) body once, not per layer
        "--gin_param=ModelConfig.scan_layers=False", "--topology=v4:2x2x1", "--json"]


def test_compile_reports_memory_and_flops(capsys):
    rc = main(["compile", *ARGS])
    r = json.loads(capsys.readouterr().out)
    assert rc == 0 and r["fits"] and r["num_devices"] == 4 and r["mesh"]["tensor"] == 2
    assert r["hbm_bytes_per_device"] == 32 * 2**30
    m = r["memory_analysis"]
    assert r["bytes_per_device"] == m["total"] > 0
    # Arguments are exactly the sharded state the planner measures, plus the batch shard.
    plan_state = sum(r["plan_bytes_breakdown"][k] for k in ("params", "master", "optimizer"))
    batch = 5 * 8 * 128 * 4 // 4  # five [8, 128] int32/float32 arrays over 4 devices
    assert m["argument_size_in_bytes"] == pytest.approx(plan_state + batch, rel=0.01)
    assert m["alias_size_in_bytes"] >= 0.95 * plan_state  # the donated state is updated in place
    # XLA counts no FLOPs for the embedding gather that Chinchilla App. F counts as a matmul.
    assert 0.5 < r["flops_per_device"] / r["plan_flops_per_device"] < 1.1
