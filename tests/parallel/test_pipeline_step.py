"""Pipelined gradients (GPipe, 1F1B, circular, interleaved 1F1B and zero-bubble on 2, 4, 8 stages, and with
tensor x data parallelism inside) equal the non-pipelined ones; bad settings are named with their fix."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gopher_jax.model.decoder import Decoder
from gopher_jax.ops import cross_entropy
from gopher_jax.parallel.mesh import MeshConfig, build_mesh
from gopher_jax.parallel.pipeline import Pipeline, PipelineConfig
from gopher_jax.parallel.rules import batch_sharding, param_shardings
from gopher_jax.train.state import abstract_params
from tests.parallel.pipeline_helpers import FAST_COMPILE, MODEL, RULES, SEQ, max_rel_diff, the_batch

Z_LOSS = 1e-3
MICROBATCHES = {2: 4, 4: 8, 8: 8}  # by stages: >= stages, and past the 1F1B warm-up where it can be
REPEATS = {"circular": 2, "interleaved_1f1b": 2}

# pipeline 2 and 8 with data parallelism over the rest; pipeline 4 with FSDP (params sharded over fsdp too)
MESHES = {2: dict(data=-1, pipeline=2), 4: dict(data=1, fsdp=2, pipeline=4), 8: dict(data=1, pipeline=8)}
# Every schedule on two or three pipeline degrees (each case is one compile: the suite runs on 2 cores).
RUNS = {"gpipe": (2, 8), "1f1b": (2, 4, 8), "circular": (4,), "interleaved_1f1b": (2, 8), "zero_bubble": (2, 4, 8)}
CASES = {f"{s}_pp{pp}" + ("_fsdp2" if pp == 4 else ""): (MESHES[pp], s) for s, pps in RUNS.items() for pp in pps}
for s in ("1f1b", "interleaved_1f1b", "zero_bubble"):
    CASES[f"{s}_pp2_tensor2_data2"] = (dict(data=2, tensor=2, pipeline=2), s)
# zero-bubble's split backward under remat 'full' (Dense inputs saved inside the checkpointed layer), its
# program fitted to compiled op costs and one pending weight-gradient set, refined slot by slot
# (pipeline.zero_bubble_search_tries: the trainer's path to zero_bubble_search.py)
CASES["zero_bubble_pp4_remat_full_fitted"] = (dict(data=2, pipeline=4), "zero_bubble")
# (W kept whole: W in layer groups and the fill builder's programs have their own cases below, and the
# split programs of this shape compile ~3x longer)
EXTRA = {"zero_bubble_pp4_remat_full_fitted": (dict(remat_policy="full"),
                                                dict(program_costs="compiled", max_pending_weight_grads=1,
                                                     max_w_parts=1, zero_bubble_search_tries=30))}
# zero-bubble keeping two weight-gradient sets, each W run in 4 layer groups (forced below), its stages under
# remat 'dots_no_batch' on a remat 'full' model (pipeline.zero_bubble_remat: R keeps the weight matmuls' outputs)
CASES["zero_bubble_pp2_two_sets_w_parts_dots"] = (dict(data=-1, pipeline=2), "zero_bubble")
EXTRA["zero_bubble_pp2_two_sets_w_parts_dots"] = (dict(remat_policy="full"),
                                                  dict(max_pending_weight_grads=2, zero_bubble_remat="dots_no_batch"))
W_PARTS = {"zero_bubble_pp2_two_sets_w_parts_dots": 4}
# zero_bubble_fill's program (F / R / I in unit slots, W parts filling them), fitted to the 280B recipe's stored
# 'none' op costs with two sets and W in 2 layer groups (set below): slots holding W parts of several
# microbatches. Two stages: the same checks as four stages with W in 4 groups, at a quarter of the compile.
CASES["zero_bubble_pp2_fill_two_sets"] = (dict(data=-1, pipeline=2), "zero_bubble")
EXTRA["zero_bubble_pp2_fill_two_sets"] = ({}, dict(max_pending_weight_grads=2, program_costs="analytic"))
FILL = {"zero_bubble_pp2_fill_two_sets": 2}


@pytest.fixture(scope="module")
def reference():
    """(params, batch, loss, z, grads) of the plain Decoder on one device."""
    batch = {k: jnp.asarray(v) for k, v in the_batch().items()}
    params = jax.jit(lambda: nn.meta.unbox(Decoder(MODEL).init(jax.random.key(0), batch["inputs"])["params"]))()
    total = jnp.sum(batch["loss_weights"])

    def loss_fn(p):
        logits = Decoder(MODEL).apply({"params": p}, batch["inputs"], batch["segment_ids"], batch["positions"])
        loss_sum, z_sum = cross_entropy(logits, batch["targets"], batch["loss_weights"], Z_LOSS)
        return loss_sum / total, z_sum / total

    grad_fn = jax.jit(jax.value_and_grad(loss_fn, has_aux=True)).lower(params).compile(FAST_COMPILE)
    (loss, z), grads = grad_fn(params)
    return jax.device_get((params, the_batch(), loss, z, grads))


@pytest.mark.parametrize("name", sorted(CASES))
def test_pipelined_gradients_equal_unpipelined(name, reference):
    mesh_kw, schedule = CASES[name]
    model_kw, pipeline_kw = EXTRA.get(name, ({}, {}))
    params, batch, ref_loss, ref_z, ref_grads = reference
    mesh = build_mesh(MeshConfig(**mesh_kw))
    repeats = REPEATS.get(schedule, 1)
    pipe = Pipeline(MODEL.replace(**model_kw), PipelineConfig(schedule=schedule, repeats=repeats, **pipeline_kw),
                    mesh.shape["pipeline"], MICROBATCHES[mesh.shape["pipeline"]], Z_LOSS,
                    seq_len=SEQ if pipeline_kw else 0)  # (0: zero-bubble fitted to unit costs, no compiles)
    if pipeline_kw.get("program_costs") == "compiled":
        assert pipe.op_costs.source == "compiled" and pipe.schedule.placement.startswith("zb_h1")
    if name in W_PARTS:  # the program of this case with its W in layer groups, run by the same executor
        from gopher_jax.parallel.pipeline.executor import compile_program, make_pipeline_grads
        from gopher_jax.parallel.pipeline.schedule import make_schedule
        pipe.schedule = make_schedule("zero_bubble", pipe.stages, pipe.microbatches, op_costs=pipe.op_costs,
                                      max_pending_w=2, w_parts=(W_PARTS[name],))
        assert pipe.schedule.w_parts == W_PARTS[name] and compile_program(pipe.schedule).wg_slots == 2
        from gopher_jax.parallel.pipeline.config import stage_model
        pipe._grads = make_pipeline_grads(stage_model(MODEL.replace(**model_kw), pipe.config), pipe.schedule, Z_LOSS)
    if name in FILL:
        import dataclasses
        from gopher_jax.parallel.pipeline import zero_bubble, zero_bubble_fill
        from gopher_jax.parallel.pipeline.executor import compile_program, make_pipeline_grads
        from gopher_jax.parallel.pipeline.program import op_cost
        from tests.parallel.test_pipeline_schedule import COSTS_280B_NONE, _stored_costs
        costs, parts = _stored_costs(COSTS_280B_NONE), FILL[name]
        split = dataclasses.replace(pipe.schedule, w_parts=parts)
        rule = zero_bubble_fill.Rule(("I", "R*", "F", "R"), (), True, 0, True)  # every option of the builder on
        assert rule in zero_bubble.FILLS
        prog = zero_bubble_fill.fill_program(pipe.stages, pipe.microbatches, lambda op: op_cost(split, costs, op), 2, 1,
                                             parts, pipe.stages, rule)
        pipe.schedule = dataclasses.replace(split, program=prog, placement="fill")
        bufs = compile_program(pipe.schedule)
        many = max(len({op.microbatch for op in ops if op.kind == "W"}) for row in prog for ops in row)
        assert bufs.wg_slots == 2 and many >= 2  # two kept sets, and a slot reading W parts of two microbatches
        pipe._grads = make_pipeline_grads(MODEL, pipe.schedule, Z_LOSS)
    p_sh = param_shardings(abstract_params(MODEL, SEQ), mesh, RULES)
    b_sh = batch_sharding(mesh, RULES)
    with jax.set_mesh(mesh), nn.logical_axis_rules(RULES):
        fn = jax.jit(lambda p, b: pipe(p, b, jnp.sum(b["loss_weights"])), in_shardings=(p_sh, b_sh))
        compiled = fn.lower(params, batch).compile(FAST_COMPILE)
        loss, z, grads = jax.device_get(compiled(params, batch))
    diff = max_rel_diff(grads, ref_grads)
    print(f"{name}: loss {float(loss):.7f} vs {float(ref_loss):.7f} (rel {abs(loss / ref_loss - 1):.1e}), "
          f"gradients max |diff| / max|grad| {diff:.1e}")
    assert float(loss) == pytest.approx(float(ref_loss), rel=1e-5)
    assert float(z) == pytest.approx(float(ref_z), rel=1e-4)
    assert jax.tree.structure(grads) == jax.tree.structure(ref_grads)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), grads, ref_grads)


@pytest.mark.parametrize("kwargs, match", [
    (dict(schedule="1f1b", stages=4, microbatches=2), r"microbatches=2 < MeshConfig.pipeline=4"),
    (dict(schedule="gpipe", stages=3, microbatches=4), r"num_layers=16 does not split into MeshConfig.pipeline=3"),
    (dict(schedule="circular", stages=4, microbatches=4, repeats=3), r"pipeline.repeats=3 = 12 equal stages"),
    (dict(schedule="circular", stages=2, microbatches=4, repeats=1), r"needs pipeline.repeats >= 2"),
    (dict(schedule="interleaved_1f1b", stages=4, microbatches=6, repeats=2), r"not a multiple; use 8"),
    (dict(schedule="zero_bubble", stages=2, microbatches=4, repeats=2), r"only applies to"),
    (dict(schedule="gpipe", stages=2, microbatches=3, pipeline_microbatches=2), r"not a multiple of pipeline"),
])
def test_bad_pipeline_settings_name_the_value_and_the_fix(kwargs, match):
    kwargs = dict(kwargs)
    stages, mb = kwargs.pop("stages"), kwargs.pop("microbatches")
    cfg = PipelineConfig(schedule=kwargs["schedule"], repeats=kwargs.get("repeats", 1),
                         microbatches=kwargs.get("pipeline_microbatches", 0))
    with pytest.raises(ValueError, match=match):
        Pipeline(MODEL, cfg, stages, mb, 0.0)
    with pytest.raises(ValueError, match="not one of"):
        PipelineConfig(schedule="interleaved")


def test_validate_reports_pipeline_problems_before_compiling():
    import gin

    from gopher_jax.train.config import TrainConfig
    from gopher_jax.train.validate import ConfigError, validate

    gin.bind_parameter("pipeline.schedule", "1f1b")
    train = TrainConfig(batch_size=32, seq_len=SEQ, microbatches=2)
    with pytest.raises(ConfigError, match=r"microbatches=2 < MeshConfig.pipeline=4"):
        validate(MODEL, train, MeshConfig(data=2, pipeline=4), RULES, num_devices=8)
    sizes = validate(MODEL, TrainConfig(batch_size=32, seq_len=SEQ, microbatches=4),
                     MeshConfig(data=1, tensor=2, dcn_pipeline=4), RULES, num_devices=8)
    assert sizes["pipeline"] == 4


def test_pipeline_across_slices_builds_the_pipeline_axis_over_dcn():
    mesh = build_mesh(MeshConfig(data=1, tensor=2, dcn_pipeline=4))  # CPU: 4 "slices" of 2 devices
    assert dict(mesh.shape) == {"data": 1, "fsdp": 1, "tensor": 2, "pipeline": 4}
    ids = np.vectorize(lambda d: d.id)(mesh.devices)
    assert ids[0, 0, :, 0].tolist() == [0, 1] and ids[0, 0, 0, :].tolist() == [0, 2, 4, 6]  # a slice per stage


def test_zero_bubble_remat_none_runs_the_stages_the_gradient_cases_run():
    """pipeline.zero_bubble_remat='none' runs a remat 'full' model's stages without remat: the split
    backward with full residuals that the zero_bubble cases above run (MODEL has remat 'none') and find
    equal to the unpipelined gradients; remat never changes the gradients. Bad values are named."""
    from gopher_jax.parallel.pipeline.config import stage_model
    full = MODEL.replace(remat_policy="full")
    option = PipelineConfig(schedule="zero_bubble", zero_bubble_remat="none")
    assert stage_model(full, option) == MODEL and stage_model(full, PipelineConfig(schedule="zero_bubble")) == full
    # the program is fitted to the stages' own costs: I is the dx pullback alone (analytic: I = W = F)
    assert Pipeline(full, option, 2, 4, 0.0).op_costs("I", "mid") == 1.0
    assert Pipeline(full, PipelineConfig(schedule="zero_bubble"), 2, 4, 0.0).op_costs("I", "mid") == 2.0
    with pytest.raises(ValueError, match=r"zero_bubble_remat='none' only applies to pipeline.schedule='zero_bubble'"):
        PipelineConfig(schedule="1f1b", zero_bubble_remat="none")
    with pytest.raises(ValueError, match=r"zero_bubble_remat='nothing' must be 'model' or one of"):
        PipelineConfig(schedule="zero_bubble", zero_bubble_remat="nothing")
