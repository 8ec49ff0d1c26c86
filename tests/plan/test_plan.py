"""`gopher-jax plan`: MT-NLG's memory facts, the pipeline bubble, topologies, the recipes' plans."""
import json

import pytest

from gopher_jax.cli import main
from gopher_jax.model.config import ModelConfig
from gopher_jax.parallel.pipeline import PipelineConfig
from gopher_jax.parallel.rules import DEFAULT_RULES
from gopher_jax.plan import memory, throughput
from gopher_jax.plan.plan_cli import make_plan
from gopher_jax.plan.topology import parse_topology
from gopher_jax.train.config import OptimizerConfig, TrainConfig

SIZES = {"data": 1, "fsdp": 4, "tensor": 2, "pipeline": 1}
MIXED = ModelConfig(num_layers=2, d_model=64, num_heads=4, head_dim=16, vocab_size=256, max_len=64,
                    param_dtype="bfloat16", dtype="bfloat16", remat_policy="full")


def test_mixed_precision_adam_is_mtnlg_20_bytes_per_param():
    train = TrainConfig(batch_size=8, seq_len=64, microbatches=1)
    mem = memory.bytes_per_device(MIXED, OptimizerConfig(), train, DEFAULT_RULES, SIZES)
    # bf16 weights 2 + bf16 grads 2 + fp32 grads 4 + fp32 master 4 + Adam moments 8 (+ Adam's step count)
    assert mem["state_bytes_per_param"] == pytest.approx(20, rel=1e-3)


def test_full_remat_keeps_mtnlg_layer_boundaries():
    train = TrainConfig(batch_size=16, seq_len=64, microbatches=2)
    act = memory.activation_bytes(MIXED, train, DEFAULT_RULES, SIZES)
    rows = 16 // 2 // 4  # per microbatch, batch split over fsdp=4
    assert act["kept"] == rows * MIXED.num_layers * 64 * MIXED.d_model * 2  # batch x layers x seq x hidden x 2


def test_pipeline_bubble_matches_mtnlg():
    assert throughput.pipeline_efficiency(4 * 35, 35) == pytest.approx(0.81, abs=0.01)
    assert throughput.pipeline_efficiency(8 * 35, 35) == pytest.approx(0.90, abs=0.01)
    assert throughput.pipeline_efficiency(7, 1) == 1.0
    assert throughput.pipeline_efficiency(8, 4, repeats=2) == pytest.approx(16 / 19)  # circular


def test_pipelined_activations_follow_the_schedule():
    sizes = dict(SIZES, pipeline=2)
    train = TrainConfig(batch_size=64, seq_len=64, microbatches=8)
    stash = {s: memory.activation_bytes(MIXED, train, DEFAULT_RULES, sizes,
                                        PipelineConfig(schedule=s, repeats=2 if s in ("circular", "interleaved_1f1b")
                                                       else 1))["microbatches_in_flight"]
             for s in ("gpipe", "1f1b", "circular", "interleaved_1f1b", "zero_bubble")}
    # interleaved: Megatron's 2 (P - 1) + (R - 1) P + 1 on the first device; zero-bubble: 1F1B's
    assert stash == {"gpipe": 8, "1f1b": 2, "circular": 16, "interleaved_1f1b": 5, "zero_bubble": 2}


TINY_PIPELINE = ["gin_configs/runs/pretrain.gin", "gin_configs/models/tiny.gin",
                 "gin_configs/parallel/cpu8_pipeline.gin"]


@pytest.mark.parametrize("schedule, repeats", [("gpipe", 1), ("1f1b", 1), ("circular", 2),
                                               ("interleaved_1f1b", 2), ("zero_bubble", 1)])
def test_plan_reports_executed_pipeline_efficiency_beside_the_formula(schedule, repeats):
    """Unit op costs: every schedule's executed efficiency (slot cost = slowest device) is within 2
    points of its formula or above it; the step time is predicted from the executed number."""
    params = [f"pipeline.schedule='{schedule}'", f"pipeline.repeats={repeats}", "train.microbatches=4"]
    plan = make_plan(TINY_PIPELINE, params, "v4:2x2x2", pipeline_costs="analytic")
    assert plan["pipeline_schedule"] == schedule and plan["pipeline_op_costs"] == "analytic"
    formula = throughput.pipeline_efficiency(4, 2, repeats)
    if schedule == "zero_bubble":  # ZB-H1's bubble: (P - 1) / (3 MB + P - 1)
        formula = 12 / 13
    assert plan["pipeline_efficiency_formula"] == pytest.approx(formula)
    assert plan["pipeline_efficiency"] >= formula - 0.02
    assert plan["pipeline_bubble"] == pytest.approx(1 - plan["pipeline_efficiency"])
    no_bubble = plan["predicted_step_s"] * plan["pipeline_efficiency"]
    assert make_plan(TINY_PIPELINE, params + ["MeshConfig.pipeline=1", "MeshConfig.data=4"], "v4:2x2x2",
                     pipeline_costs="analytic")["predicted_step_s"] == pytest.approx(no_bubble)


def test_plan_prices_ops_by_compiling_them():
    """Compiled op costs (tiny model): 1F1B's executed efficiency near the formula, GPipe's above it."""
    for schedule in ("1f1b", "gpipe"):
        plan = make_plan(TINY_PIPELINE, [f"pipeline.schedule='{schedule}'", "train.microbatches=4"], "v4:2x2x2")
        assert plan["pipeline_op_costs"] == "compiled"
        print(schedule, plan["pipeline_efficiency"], plan["pipeline_efficiency_formula"])
        assert plan["pipeline_efficiency"] >= plan["pipeline_efficiency_formula"] - 0.02


def test_topologies():
    t = parse_topology("4xv3:32x32")
    assert (t.num_slices, t.num_chips, t.num_devices, t.chip.hbm_bytes_per_device) == (4, 4096, 8192, 16 * 2**30)
    assert parse_topology("v4:2x2x1").num_devices == 4  # megacore: one device per chip
    for bad in ("v9:2x2", "v3", "v3:2xq"):
        with pytest.raises(ValueError, match="topology"):
            parse_topology(bad)


@pytest.mark.parametrize("recipe,topology", [("gopher_280b_v3.gin", "4xv3:32x32"),
                                             ("chinchilla_70b_v4.gin", "v4:8x8x16")])
def test_recipes_fit(recipe, topology):
    plan = make_plan([f"gin_configs/parallel/{recipe}"], [], topology, pipeline_costs="analytic")
    assert plan["fits"] and plan["bytes_per_device"] == sum(plan["bytes_breakdown"].values())
    if recipe == "gopher_280b_v3.gin":  # one GPipe stage per pod, 12 microbatches: formula bubble 3/15
        assert plan["mesh"]["pipeline"] == 4 and plan["pipeline_efficiency_formula"] == pytest.approx(12 / 15)
        assert plan["pipeline_schedule"] == "gpipe" and plan["pipeline_efficiency"] > 0.8  # last stage skips F
        assert plan["activation_detail"]["microbatches_in_flight"] == 12
    else:
        assert plan["mesh"]["pipeline"] == 1 and plan["pipeline_bubble"] == 0
    assert plan["predicted_step_s"] > 0


def test_cli_json(capsys):
    rc = main(["plan", "--gin_file=gin_configs/parallel/chinchilla_70b_v4.gin", "--topology=v4:8x8x16", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["bytes_per_device"] < out["hbm_bytes_per_device"] == 32 * 2**30
    assert set(out["bytes_breakdown"]) == {"params", "master", "optimizer", "gradients", "gathered_layer", "activations", "logits"}
    assert 69e9 < out["global_params"] < 71e9


def test_mesh_that_does_not_fit_the_topology_is_named():
    with pytest.raises(ValueError, match="dcn_pipeline=4"):
        make_plan(["gin_configs/parallel/gopher_280b_v3.gin"], [], "v3:32x32")


def test_cli_table(capsys):
    rc = main(["plan", "--gin_file=gin_configs/parallel/gopher_280b_v3.gin", "--topology=4xv3:32x32",
               "--pipeline_costs=analytic"])
    out = capsys.readouterr().out
    assert rc == 0 and "of 16 GiB HBM -> fits" in out and "MT-NLG mixed-precision Adam: 20" in out
    assert "pipeline gpipe: executed efficiency" in out and "formula 80.0%" in out
