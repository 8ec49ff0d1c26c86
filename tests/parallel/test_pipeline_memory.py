"""The compiled pipeline step, per schedule: what it keeps (memory) and what it runs (FLOPs).

Memory: 1F1B, interleaved 1F1B and zero-bubble keep a scratch that stays flat as microbatches grow
(GPipe's grows by one stashed stage input per extra microbatch); ZB-H1's is 1F1B's plus its residual
set and the weight-gradient sets its program keeps (test_zero_bubble_h1_is_1f1b_plus_its_weight_gradient_sets
states the epsilon).
Executed cost: the step's slot switch is priced branch by branch from its compiled HLO (loop-aware,
plan/hlo_cost.py) and summed over the slots each device runs; that equals the sum of the program's op
costs (compiled_op_costs.py, the same StageOps compiled alone) within 2% for every schedule, so an
executor that ran more than its program says (a V that re-ran the forward: +1/3) would fail.
(CPU code at optimisation level 0 to keep the compiles cheap: the same HLO-level FLOPs; ~4% smaller
temporaries at the default level, same trends.) Prints the figures for the notes."""
import flax.linen as nn
import jax
import numpy as np
import pytest

from gopher_jax.parallel.mesh import MeshConfig, build_mesh
from gopher_jax.parallel.pipeline import Pipeline, PipelineConfig, compiled_op_costs, cost
from gopher_jax.parallel.pipeline.config import stage_model
from gopher_jax.parallel.pipeline.executor import compile_program
from gopher_jax.parallel.pipeline.program import op_cost
from gopher_jax.parallel.rules import batch_sharding, param_shardings
from gopher_jax.plan import hlo_cost
from gopher_jax.train.state import abstract_params
from tests.parallel.pipeline_helpers import FAST_COMPILE, MODEL, RULES

# the XLA attention and matmul paths: their FLOPs are visible to the cost analysis (the CPU kernels are
# custom calls)
CFG = MODEL.replace(num_layers=8, d_model=64, num_heads=4, head_dim=16, remat_policy="full", attention_impl="xla",
                    matmul_impl="xla")
SEQ, ROWS, STAGES, DATA = 32, 16, 2, 4  # rows per microbatch; pipeline 2 x data 4 -> 4 rows per device
MICROBATCHES = (4, 16)
SCHEDULES = {"gpipe": 1, "1f1b": 1, "interleaved_1f1b": 2, "zero_bubble": 1}  # name: repeats
ZB2 = ("zero_bubble", 4, 2)  # also compiled: zero_bubble at MB 4 with 2 weight-gradient sets
ZB_NONE = ("zero_bubble", 4, 1, "none")  # and with pipeline.zero_bubble_remat='none' (R keeps full residuals)
SEARCH_TRIES = 400  # pipeline.zero_bubble_search_tries for the toy's K = 2 'none' program (ADR 0002)
KEYS = ("inputs", "targets", "loss_weights", "segment_ids", "positions")


@pytest.fixture(scope="module")
def compiled():
    """{(schedule, microbatches): (Pipeline, compiled step)}: one compile each, shared by the tests."""
    mesh = build_mesh(MeshConfig(data=DATA, pipeline=STAGES))
    boxed = abstract_params(CFG, SEQ)
    params = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          nn.meta.unbox(boxed), param_shardings(boxed, mesh, RULES))
    b_sh = batch_sharding(mesh, RULES)
    out = {}
    runs = [(schedule, mb, 1, "model") for schedule in SCHEDULES for mb in MICROBATCHES] + [ZB2 + ("model",), ZB_NONE]
    for schedule, mb, sets, zb_remat in runs:
        batch = {k: jax.ShapeDtypeStruct((ROWS * mb, SEQ), "float32" if k == "loss_weights" else "int32",
                                         sharding=b_sh) for k in KEYS}
        # program fitted to the analytic costs of remat 'full' (1F1B: the paired placement)
        pipe = Pipeline(CFG, PipelineConfig(schedule=schedule, repeats=SCHEDULES[schedule], max_pending_weight_grads=sets,
                                            zero_bubble_remat=zb_remat), STAGES, mb, 0.0)
        with jax.set_mesh(mesh), nn.logical_axis_rules(RULES):
            step = jax.jit(lambda p, b, pipe=pipe: pipe(p, b, 1.0)).lower(params, batch).compile(FAST_COMPILE)
        out[(schedule, mb) if (sets, zb_remat) == (1, "model") else (schedule, mb, sets) + (zb_remat,) * (zb_remat != "model")
            ] = (pipe, step)
    return out


def _temp(compiled, *key) -> int:
    return int(compiled[key][1].memory_analysis().temp_size_in_bytes)


def test_bounded_schedules_keep_memory_flat_in_microbatches(compiled):
    temp = {(s, mb): _temp(compiled, s, mb) for s in SCHEDULES for mb in MICROBATCHES}
    stash_entry = ROWS // DATA * SEQ * CFG.d_model * 4  # one stage input on one device, fp32
    for mb in MICROBATCHES:
        print(f"microbatches {mb:2d}: temp bytes " + ", ".join(f"{s} {temp[s, mb]:,}" for s in SCHEDULES))
    lo, hi = MICROBATCHES
    gpipe_growth = temp["gpipe", hi] - temp["gpipe", lo]
    # GPipe keeps every microbatch's stage input until the backward phase: ~one entry per microbatch.
    assert gpipe_growth >= 0.9 * (hi - lo) * stash_entry
    for s in ("1f1b", "interleaved_1f1b"):
        assert temp[s, hi] - temp[s, lo] < 0.2 * gpipe_growth, s
        assert temp[s, hi] == pytest.approx(temp[s, lo], rel=0.05), s
    # ZB-H1 keeps one residual and one weight-gradient set whatever MB
    assert temp["zero_bubble", hi] == pytest.approx(temp["zero_bubble", lo], rel=0.05)


def _set_bytes(cfg=CFG) -> dict:
    """Bytes on one device of a residual set, a weight-gradient set and one stage's fp32 gradients
    (compiled_op_costs.stage_set_bytes: the executor's own layouts) of the stages `cfg` runs."""
    return compiled_op_costs.stage_set_bytes(cfg, SEQ, ROWS // DATA, cfg.num_layers // STAGES)


@pytest.mark.parametrize("key", [("zero_bubble", mb) for mb in MICROBATCHES] + [ZB2, ZB_NONE])
def test_zero_bubble_h1_is_1f1b_plus_its_weight_gradient_sets(compiled, key):
    """ZB-H1 temp <= 1F1B temp x (1 + eps) x 1.03, eps = (wg_live S_W + 2 res S_R + G) / 1F1B temp, where
    S_W is one weight-gradient set (every distinct Dense input and Dense output cotangent of the stage),
    S_R one residual set and G one stage's fp32 parameter gradients (a W's kernel gradients next to the
    slot's others), all from the executor's own layouts (`_set_bytes`), counted from the program:
    wg_live = 2 K' + M (executor.Program.wg_live), K' <= K the weight-gradient sets the program keeps
    across slots (each twice: the buffer, and the copy XLA:CPU makes when a slot writes into it), M the
    sets its busiest slot materialises (an I's set leaving its branch; a pooled set a W reads back);
    res the residual sets kept across slots (1), twice like the kept weight-gradient sets (measured with
    zero_bubble_remat='none', where a residual set is 2 weight-gradient sets: +0.87 S_R above a single
    count). 3%: the rest of a slot's scratch. And from below: the
    K' kept sets and the I's are really there (temp >= 1F1B + (K' + 1) S_W), so a program keeping nothing
    or the executor copying more would fail. The 1F1B is the paired placement (remat 'full'), the one
    the recipe would run; with remat 'full' a weight-gradient set (~16 d per token and layer here) dwarfs
    what 1F1B keeps (the layer inputs, d). With pipeline.zero_bubble_remat='none' (ZB_NONE) S_R is the
    stage's full residuals (every activation of one microbatch, no remat), and it is really there too."""
    pipe = compiled[key][0]
    sets = _set_bytes(stage_model(CFG, pipe.config))
    prog = compile_program(pipe.schedule)
    k = key[2] if len(key) > 2 else 1
    assert prog.act_slots <= STAGES and prog.res_slots <= 1 and 1 <= prog.wg_slots <= k
    one_f, zb = _temp(compiled, "1f1b", key[1]), _temp(compiled, *key)
    kept = prog.wg_live * sets["weight_grad"] + 2 * prog.res_slots * sets["residual"] + sets["stage_grads"]
    eps = kept / one_f
    print(f"{key}: ZB-H1 temp {zb:,} B, 1F1B {one_f:,} B, ratio {zb / one_f:.2f}; eps {eps:.2f} = ({prog.wg_live} x "
          f"{sets['weight_grad']:,} + {2 * prog.res_slots} x {sets['residual']:,} + {sets['stage_grads']:,}) / 1F1B "
          f"(sets kept {prog.wg_slots}, in the busiest slot {prog.wg_in_slot})")
    assert zb <= one_f * (1 + eps) * 1.03
    assert zb >= one_f + (prog.wg_slots + 1) * sets["weight_grad"] + (key == ZB_NONE) * sets["residual"]


def _executed_vs_program(pipe, step, costs):
    """(executed FLOPs per device from the compiled step's branches, the program's op costs per device)."""
    prog = compile_program(pipe.schedule)
    switches = [b for b in hlo_cost.branch_flops(step.as_text()) if len(b) == len(prog.combos)]
    assert len(switches) == 1, [len(b) for b in hlo_cost.branch_flops(step.as_text())]
    per_branch = switches[0]
    executed = [sum(per_branch[prog.branch[t, d]] for t in range(prog.branch.shape[0]))
                for d in range(pipe.stages)]
    s = pipe.schedule
    program = [sum(op_cost(s, costs, op) for row in s.program for op in row[d]) for d in range(pipe.stages)]
    return executed, program


@pytest.mark.parametrize("key", [(s, MICROBATCHES[0]) for s in SCHEDULES] + [ZB_NONE], ids=lambda k: "_".join(map(str, k)))
def test_executed_flops_are_the_programs_op_costs(compiled, key):
    """ZB_NONE: priced at the op costs of its stages (no remat): an I that still recomputed each layer
    would run ~0.7 F more per backward and fail."""
    schedule = key[0]
    pipe, step = compiled[key]
    layers = CFG.num_layers // (STAGES * SCHEDULES[schedule])
    costs = compiled_op_costs.measured_costs(stage_model(CFG, pipe.config), SEQ, layers, split=schedule == "zero_bubble",
                                             rows=ROWS // DATA)
    executed, program = _executed_vs_program(pipe, step, costs)
    print(f"{schedule} ({pipe.schedule.placement}): executed FLOPs per device {executed}, program {program}")
    for e, p in zip(executed, program):
        assert e == pytest.approx(p, rel=0.02)
    # the check has teeth: a V that re-ran the forward adds F per backward, far above 2%
    fwd = sum(costs("F", "mid") for row in pipe.schedule.program for op in row[0] if op.kind in "VBI")
    assert fwd > 0.1 * program[0]


def _toy_costs(remat: str) -> cost.OpCosts:
    """The toy's compiled op costs with its stages under `remat`: F, R, V, B unsplit, R, I, W split."""
    layers, cfg = CFG.num_layers // STAGES, CFG.replace(remat_policy=remat)
    plain = compiled_op_costs.measured_costs(cfg, SEQ, layers, rows=ROWS // DATA)
    split = compiled_op_costs.measured_costs(cfg, SEQ, layers, split=True, rows=ROWS // DATA)
    return cost.OpCosts({**plain.cost, **{key: v for key, v in split.cost.items() if key[0] in "RIW"}}, "compiled")


@pytest.fixture(scope="module")
def toy_costs():
    """{remat: _toy_costs(remat)} for 'full' and 'none'. A module fixture so that its users run in the same
    pytest worker as the users of `compiled` (tests/conftest.py's scheduler): measured_costs is cached per
    process, and test_executed_flops_are_the_programs_op_costs[zero_bubble_4_1_none] prices the same
    'none' stages, so they are compiled once instead of once per worker."""
    return {remat: _toy_costs(remat) for remat in ("full", "none")}


def test_zero_bubble_i_plus_w_is_v(toy_costs):
    """The split backward does the backward once: I + W = V within 2%, each stage position, measured, with
    the remat 'full' stage and with pipeline.zero_bubble_remat='none'. Without the in-layer recompute I is
    the dx pullback alone: I / W drops from ~2.3 to ~1.4 (attention's and the norms' backward stay in I)."""
    ratio = {}
    for remat in ("full", "none"):
        costs = toy_costs[remat]
        for pos in cost.POSITIONS:
            i, w, v, r = (costs(k, pos) for k in "IWVR")
            print(f"remat {remat}, {pos}: I {i / r:.3f} + W {w / r:.3f} = V {v / r:.3f} R units, I / W {i / w:.3f}")
            assert i + w == pytest.approx(v, rel=0.02)
            assert w > 0.1 * v and i > 0.1 * v
        ratio[remat] = costs("I", "mid") / costs("W", "mid")
    assert ratio["full"] > 2 and 1 < ratio["none"] < 1.6
    assert np.isfinite(toy_costs["none"]("W", "mid"))


@pytest.mark.parametrize("remat", ("full", "none"))
def test_zero_bubble_at_the_toys_compiled_costs(remat, toy_costs):
    """P = 4, MB = 12 at the toy's compiled op costs (a 4-layer stage; its stages with remat 'full', or
    'none' = pipeline.zero_bubble_remat): the checks of test_pipeline_schedule.check_zero_bubble_at_compiled_costs
    (bubble >= its lower bound > a third of 1F1B's; faster than the remat 'full' 1F1B)."""
    from gopher_jax.parallel.pipeline import zero_bubble
    from gopher_jax.parallel.pipeline.schedule import make_schedule
    from tests.parallel.test_pipeline_schedule import _mid_idle, check_zero_bubble_at_compiled_costs
    costs, layers = toy_costs[remat], CFG.num_layers // STAGES
    one = check_zero_bubble_at_compiled_costs(f"toy, ZB stages remat {remat}", costs, layers,
                                              one_f1b_costs=toy_costs["full"])
    # two pending sets: the bound drops below a third with 'none' stages; the program (W in quarters at most,
    # the first and last stages 7% and 12% dearer than a middle one) stays short of it (ADR 0002)
    two = make_schedule("zero_bubble", 4, 12, op_costs=costs, max_pending_w=2, w_parts=zero_bubble.part_choices(layers))
    f, i, w = (costs(k, "mid") for k in "FIW")
    third = 3 * (f + costs("B", "mid")) / 3
    ref = cost.reference_work(two, costs)
    bound = zero_bubble.bubble_lower_bound(4, f, i, w, 2)
    print(f"toy, ZB stages remat {remat}, K = 2 ({two.placement}): executed {cost.executed_efficiency(two, costs):.4f},"
          f" a third of 1F1B's needs {ref / (ref + third):.4f}; lower bound {bound / f:.2f} F")
    assert _mid_idle(two, costs) >= bound - 1e-9 * f
    assert cost.executed_efficiency(two, costs) > one["executed"]
    if remat == "none":  # one rule in every slot stays short of a third; a rule per device and slot gets there
        assert cost.executed_efficiency(two, costs) < ref / (ref + third)
        assert two.w_parts == 4  # W in quarters wins without the search: search that count alone (a third of the time)
        searched = make_schedule("zero_bubble", 4, 12, op_costs=costs, max_pending_w=2, w_parts=(4,),
                                 search_tries=SEARCH_TRIES)
        prog, ref_s = compile_program(searched), cost.reference_work(searched, costs)
        executed = cost.executed_efficiency(searched, costs)
        print(f"  with pipeline.zero_bubble_search_tries={SEARCH_TRIES} ({searched.placement}): executed {executed:.4f}, "
              f"a third needs {ref_s / (ref_s + third):.4f}; stage inputs {prog.act_slots}, sets kept {prog.wg_slots}")
        assert executed >= ref_s / (ref_s + third)  # executed bubble <= a third of 1F1B's formula bubble
        assert prog.act_slots <= 4 and prog.res_slots <= 1 and prog.wg_slots <= 2  # 1F1B's stash, K = 2
        assert _mid_idle(searched, costs) >= bound - 1e-9 * f
