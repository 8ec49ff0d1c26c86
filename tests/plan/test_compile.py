"""`gopher-jax compile`: the real train step compiled for TPU v4:2x2x1 on this CPU host (libtpu).

Not skipped without libtpu: CI installs it through the `test` extra (jax[tpu]); a missing libtpu
fails with the install command in the message.
"""
import contextlib
import io
import json

import pytest

from gopher_jax.cli import main

LAYERS = 2
ARGS = ["--gin_file=gin_configs/runs/pretrain.gin", "--gin_file=gin_configs/models/tiny.gin",
        "--gin_file=gin_configs/parallel/fsdp_tensor.gin", "--gin_param=MeshConfig.data=1",
        f"--gin_param=ModelConfig.num_layers={LAYERS}", "--gin_param=train.seq_len=128", "--topology=v4:2x2x1",
        "--json"]
SCANNED = "--gin_param=ModelConfig.scan_unroll=1"  # one layer per scan iteration: a while loop of 2 trips
UNROLLED = f"--gin_param=ModelConfig.scan_unroll={LAYERS}"  # the same layers, no loop


def _compile(capsys, *extra):
    rc = main(["compile", *ARGS, *extra])
    return rc, json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def scanned():
    """The scanned program's report, compiled once for the tests below."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(["compile", *ARGS, SCANNED])
    return rc, json.loads(out.getvalue())


def test_compile_reports_memory(scanned):
    rc, r = scanned
    assert rc == 0 and r["fits"] and r["num_devices"] == 4 and r["mesh"]["tensor"] == 2
    assert r["hbm_bytes_per_device"] == 32 * 2**30
    m = r["memory_analysis"]
    assert r["bytes_per_device"] == m["total"] > 0
    # Arguments are exactly the sharded state the planner measures, plus the batch shard.
    plan_state = sum(r["plan_bytes_breakdown"][k] for k in ("params", "master", "optimizer"))
    batch = 5 * 8 * 128 * 4 // 4  # five [8, 128] int32/float32 arrays over 4 devices
    assert m["argument_size_in_bytes"] == pytest.approx(plan_state + batch, rel=0.01)
    assert m["alias_size_in_bytes"] >= 0.95 * plan_state  # the donated state is updated in place


def test_scanned_flops_equal_the_unrolled_compile(scanned, capsys):
    _, scan = scanned
    rc, unrolled = _compile(capsys, UNROLLED)
    assert rc == 0
    # The unrolled program has no loop: XLA's own cost analysis counts all of it, independently of
    # the loop accounting (plan/hlo_cost.py) under test.
    assert unrolled["loops"] == [] and unrolled["flops_per_device"] == unrolled["xla_flops_once"]
    # The scanned program: XLA alone counts each of the forward and backward layer loops once ...
    assert [loop["trip_count"] for loop in scan["loops"]] == [LAYERS, LAYERS]
    assert scan["xla_flops_once"] < 0.75 * unrolled["xla_flops_once"]
    # ... counted per trip, it does the unrolled program's FLOPs (measured: 1.1e-4 apart, XLA
    # fuses the two programs slightly differently).
    assert scan["flops_per_device"] == pytest.approx(unrolled["xla_flops_once"], rel=1e-3)
    # The plan's executed count (App. F, embedding as a gather) is then comparable: measured -2.4%
    # (the plan's backward is 2x forward everywhere; XLA counts norms and the optimizer too).
    assert scan["flops_gap"] == pytest.approx(scan["flops_per_device"] / scan["plan_flops_per_device"] - 1)
    assert abs(scan["flops_gap"]) < 0.05


def test_plan_step_time_is_the_compiled_flops_over_peak(scanned):
    """1 stage, no pipeline: plan's compute time is the compiled step's FLOPs (loop-aware, every device)
    over the chips' peak at the hardware-FLOPs utilisation plan's --mfu implies; its communication
    term adds the fsdp gathers / reduce-scatters of this fsdp x tensor mesh (tested in test_plan.py)."""
    from gopher_jax.plan.plan_cli import make_plan
    _, r = scanned
    gin_files = [a.split("=", 1)[1] for a in ARGS if a.startswith("--gin_file=")]
    params = [a.split("=", 1)[1] for a in ARGS + [SCANNED] if a.startswith("--gin_param=")]
    plan = make_plan(gin_files, params, "v4:2x2x1", mfu=0.5)
    assert plan["mesh"]["pipeline"] == 1 and plan["pipeline_efficiency"] == 1.0
    compiled_s = r["flops_per_device"] * r["num_devices"] / (plan["peak_flops"] * plan["hardware_flops_utilisation"])
    assert plan["compute_s"] == pytest.approx(compiled_s, rel=0.05)
    assert plan["predicted_step_s"] == pytest.approx(plan["compute_s"] + plan["communication_s"])
