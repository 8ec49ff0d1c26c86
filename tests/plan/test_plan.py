"""`gopher-jax plan`: MT-NLG's memory facts, the pipeline bubble, topologies, the recipes' plans."""
import json

import pytest

from gopher_jax.cli import main
from gopher_jax.model.config import ModelConfig
from gopher_jax.parallel.pipeline import PipelineConfig
from gopher_jax.parallel.rules import DEFAULT_RULES
from gopher_jax.plan import memory, throughput
from gopher_jax.plan.plan_cli import format_plan, make_plan
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
    """Stashed stage inputs are the executor's own buffers for the program the trainer runs (remat 'full':
    1F1B and interleaved take the paired placement)."""
    from gopher_jax.parallel.pipeline import cost
    from gopher_jax.parallel.pipeline.executor import compile_program
    from gopher_jax.parallel.pipeline.schedule import make_schedule
    sizes = dict(SIZES, pipeline=2)
    train = TrainConfig(batch_size=64, seq_len=64, microbatches=8)
    repeats = {"circular": 2, "interleaved_1f1b": 2}
    stash = {s: memory.activation_bytes(MIXED, train, DEFAULT_RULES, sizes,
                                        PipelineConfig(schedule=s, repeats=repeats.get(s, 1)))["microbatches_in_flight"]
             for s in ("gpipe", "1f1b", "circular", "interleaved_1f1b", "zero_bubble")}
    assert stash["gpipe"] == 8 and stash["circular"] == 16  # every microbatch (x repeats)
    assert stash["1f1b"] <= 2 * 2 - 1 and stash["zero_bubble"] <= 2
    assert stash["interleaved_1f1b"] <= 2 * (2 - 1) + (2 - 1) * 2 + 1  # Megatron's bound
    for s, n in stash.items():
        table = make_schedule(s, 2, 8, repeats.get(s, 1), cost.analytic_costs("full"))
        assert n == compile_program(table).act_slots


RECIPE_280B_SCHEDULE = "zero_bubble"  # gin_configs/parallel/gopher_280b_v3.gin (stages remat 'dots_no_batch')
TINY_PIPELINE = ["gin_configs/runs/pretrain.gin", "gin_configs/models/tiny.gin",
                 "gin_configs/parallel/cpu8_pipeline.gin"]


@pytest.mark.parametrize("schedule, repeats", [("gpipe", 1), ("1f1b", 1), ("circular", 2),
                                               ("interleaved_1f1b", 2), ("zero_bubble", 1)])
def test_plan_reports_executed_pipeline_efficiency_beside_the_formula(schedule, repeats):
    """Unit op costs: every schedule's executed efficiency (slot cost = slowest device) is at or above
    its formula; the step's compute is the 1-stage step's x (F + R + V) / (F + V) / efficiency."""
    params = [f"pipeline.schedule='{schedule}'", f"pipeline.repeats={repeats}", "train.microbatches=4"]
    plan = make_plan(TINY_PIPELINE, params, "v4:2x2x2", pipeline_costs="analytic")
    assert plan["pipeline_schedule"] == schedule and plan["pipeline_op_costs"] == "analytic"
    formula = throughput.pipeline_efficiency(4, 2, repeats)
    if schedule == "zero_bubble":  # ZB-H1's bubble: (P - 1) / (3 MB + P - 1)
        formula = 12 / 13
    assert plan["pipeline_efficiency_formula"] == pytest.approx(formula)
    assert plan["pipeline_efficiency"] >= formula - 1e-9
    assert plan["pipeline_bubble"] == pytest.approx(1 - plan["pipeline_efficiency"])
    assert plan["pipeline_recompute_factor"] == pytest.approx(4 / 3)  # remat 'none': F + R + V = 4, F + V = 3
    one_stage = make_plan(TINY_PIPELINE, params + ["MeshConfig.pipeline=1", "MeshConfig.data=4"], "v4:2x2x2",
                          pipeline_costs="analytic")
    assert plan["compute_s"] == pytest.approx(one_stage["compute_s"] * (4 / 3) / plan["pipeline_efficiency"])
    assert plan["predicted_step_s"] == pytest.approx(plan["compute_s"] + plan["communication_s"])


def test_zero_bubble_without_stage_remat_is_priced_as_it_runs():
    """pipeline.zero_bubble_remat='none' on a remat 'full' model (unit costs): the stages run F + R + I + W
    = 4 units per microbatch, the unpipelined step F + V = 1 + 3, so the recompute factor is 1 (5/4 with the
    stages under remat 'full'); the residual set is every activation of one microbatch through one stage."""
    params = ["pipeline.schedule='zero_bubble'", "train.microbatches=4", "ModelConfig.remat_policy='full'"]
    model = make_plan(TINY_PIPELINE, params, "v4:2x2x2", pipeline_costs="analytic")
    none = make_plan(TINY_PIPELINE, params + ["pipeline.zero_bubble_remat='none'"], "v4:2x2x2", pipeline_costs="analytic")
    assert model["pipeline_recompute_factor"] == pytest.approx(5 / 4)
    assert none["pipeline_recompute_factor"] == pytest.approx(1.0) and none["zero_bubble_remat"] == "none"
    # one residual set of every activation (remat 'none') instead of the layer inputs (remat 'full')
    from gopher_jax.plan import configs
    cfg, _, train, _, _ = configs.load(TINY_PIPELINE, params)
    detail = none["activation_detail"]
    per_token = memory._per_token_elements(cfg, train.seq_len, detail["tensor_parallel"])
    tokens, item = detail["local_sequences_per_microbatch"] * train.seq_len, 2 if cfg.dtype == "bfloat16" else 4
    full_set = (sum(per_token.values()) - per_token["layer_input"]) * item * tokens * cfg.num_layers // none["mesh"]["pipeline"]
    assert detail["residual_sets"] == 1 and model["activation_detail"]["weight_grad_sets"] == detail["weight_grad_sets"]
    assert detail["kept"] - model["activation_detail"]["kept"] == pytest.approx(full_set, rel=1e-6)
    # no layer is recomputed: no recompute working set
    assert none["activation_detail"]["recompute_working_set"] == 0 < model["activation_detail"]["recompute_working_set"]


def test_communication_terms_are_the_hand_computed_bytes():
    """cpu8_pipeline.gin (pipeline 2 x tensor 2 x data 2) on v4:2x2x2, 1F1B over 4 microbatches: the
    ppermute term is slots x one fp32 [1 row, 256, 256] buffer over one 45 GB/s link; the data term
    all-reduces the fp32 gradient shard (layers / pipeline / tensor) over data=2 on a 2-link ring; no fsdp."""
    import flax.linen as nn
    import jax

    from gopher_jax.plan import configs
    from gopher_jax.train.state import abstract_params
    plan = make_plan(TINY_PIPELINE, ["train.microbatches=4"], "v4:2x2x2", pipeline_costs="analytic")
    terms = plan["communication"]
    buffer = 1 * 256 * 256 * 4  # batch 8 / 4 microbatches / data 2 = 1 row; seq 256; d_model 256; fp32
    from gopher_jax.parallel.pipeline import cost
    from gopher_jax.parallel.pipeline.schedule import make_schedule
    slots = len(make_schedule("1f1b", 2, 4, op_costs=cost.analytic_costs("none")).program)
    assert terms["pipeline_ppermute"]["bytes_per_device"] == slots * buffer
    assert terms["pipeline_ppermute"]["seconds"] == pytest.approx(slots * buffer / 4.5e10)
    assert "Austin et al. 2025" in terms["pipeline_ppermute"]["bandwidth_assumed"]
    model = configs.load(TINY_PIPELINE, [])[0]
    layers = nn.meta.unbox(abstract_params(model, 256))["layers"]
    layer_params = sum(a.size for a in jax.tree.leaves(layers))  # all layers
    grad_shard = layer_params / (2 * 2) * 4  # over pipeline and tensor (every layer matrix splits by 2), fp32
    assert terms["data_allreduce"]["bytes_per_device"] == pytest.approx(2 * (2 - 1) / 2 * grad_shard, rel=0.02)
    assert terms["data_allreduce"]["seconds"] == pytest.approx(terms["data_allreduce"]["bytes_per_device"] / 9e10)
    assert terms["fsdp_gather_scatter"]["bytes_per_device"] == 0
    assert plan["communication_s"] == pytest.approx(sum(t["seconds"] for t in terms.values()))


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
    if recipe == "gopher_280b_v3.gin":  # a stage per pod, ZB-H1 with its stages under 'dots_no_batch', 12 microbatches
        assert plan["mesh"]["pipeline"] == 4 and plan["pipeline_efficiency_formula"] == pytest.approx(36 / 39)
        assert plan["pipeline_schedule"] == RECIPE_280B_SCHEDULE and plan["zero_bubble_remat"] == "dots_no_batch"
        assert plan["pipeline_efficiency"] >= plan["pipeline_efficiency_formula"] - 1e-9  # unit costs: I = W
        assert plan["activation_detail"]["microbatches_in_flight"] <= 4  # ZB-H1: at most P stage inputs
        # the fastest schedule `plan` finds that fits 16 GiB (issue 28): every other one is slower or too big
        for other, repeats, zb_remat in (("gpipe", 1, "model"), ("1f1b", 1, "model"), ("interleaved_1f1b", 2, "model"),
                                         ("zero_bubble", 1, "model"), ("zero_bubble", 1, "none")):
            alt = make_plan([f"gin_configs/parallel/{recipe}"], [f"pipeline.schedule='{other}'",
                                                                 f"pipeline.repeats={repeats}",
                                                                 f"pipeline.zero_bubble_remat='{zb_remat}'"],
                            topology, pipeline_costs="analytic")
            print(other, alt["predicted_step_s"], alt["fits"], plan["predicted_step_s"])
            assert not alt["fits"] or alt["predicted_step_s"] > plan["predicted_step_s"], other
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
    assert f"pipeline {RECIPE_280B_SCHEDULE} (" in out and "executed efficiency" in out
    assert "communication" in out and "compute" in out


def test_plan_says_when_its_memory_misses_w_parts():
    """A zero-bubble W run in layer groups keeps buffers `plan` does not count (the 280B recipe's program with
    W in up to 10 parts compiled to 22.42 GiB against 13.47 planned): the plan reports the parts and says so
    beside its total; with W whole it says nothing."""
    from gopher_jax.parallel.pipeline import cost, schedule
    from gopher_jax.plan.plan_cli import memory_caveats

    costs = cost.analytic_costs("none")
    for parts in (1, 4):
        table = schedule.make_schedule("zero_bubble", 4, 12, op_costs=costs, w_parts=(parts,))
        step = throughput.pipeline_estimate(table, costs)
        assert step["pipeline_w_parts"] == table.w_parts == parts
        caveats = memory_caveats(step)
        assert (caveats == []) if parts == 1 else ("4 layer groups" in caveats[0] and "max_w_parts=1" in caveats[0])
    plan = make_plan(["gin_configs/parallel/gopher_280b_v3.gin"], [], "4xv3:32x32", pipeline_costs="analytic")
    assert plan["pipeline_w_parts"] == 1 and plan["memory_caveats"] == []
    lines = format_plan({**plan, "memory_caveats": ["W in 4 parts: check it"]}).splitlines()
    total = next(i for i, line in enumerate(lines) if "HBM ->" in line)
    assert lines[total + 1] == "  caveat: W in 4 parts: check it"
