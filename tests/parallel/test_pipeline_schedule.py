"""Schedule tables and what their executed programs cost.

Unit tables: dependencies hold, every op runs once, and the idle slots are exactly the bubble formulas
((PP-1)/(MB+PP-1) for GPipe and 1F1B, (PP-1)/(R*MB+PP-1) for circular and interleaved 1F1B).
Executed programs, priced by the cost model (slot cost = its slowest device) at op costs *compiled* from
the 44M and 7.1B shapes under remat 'none' and 'full': GPipe, 1F1B and interleaved 1F1B at or above
their formulas with no slack, every P in {2, 4, 8} and MB in {P, 3P, 8P}. Zero-bubble (ZB-H1) keeps at
most P stage inputs, one residual set and K = pipeline.max_pending_weight_grads weight-gradient sets;
its bubble is never below zero_bubble.bubble_lower_bound, (P - 2)(F + I) + (1 - K) W, and meets it
exactly at whole-unit op costs; a third of 1F1B's bubble needs K >= I / W at P = 4, which remat 'full'
(I = 2 W) and every compiled shape miss with K = 1; with K = 2 the 280B recipe's compiled costs reach it
(zero_bubble_fill's program; docs/decisions/0002-pipeline.md)."""
import dataclasses
import functools
import itertools
import json
import pathlib
from fractions import Fraction

import gin
import pytest

from gopher_jax.model.config import ModelConfig
from gopher_jax.parallel.pipeline import compiled_op_costs, cost, placement, zero_bubble, zero_bubble_fill
from gopher_jax.parallel.pipeline.executor import compile_program
from gopher_jax.parallel.pipeline.program import op_cost
from gopher_jax.parallel.pipeline.schedule import FWD, expected_bubble, make_schedule

GRID = [(s, pp, mb, r) for pp in (2, 4, 8) for mb in (8, 16, 32) for s, r in
        (("gpipe", 1), ("1f1b", 1), ("circular", 2), ("circular", 4), ("interleaved_1f1b", 2),
         ("interleaved_1f1b", 4))]
ISSUE_ROWS = [(2, 4), (4, 12), (4, 32), (8, 32)]  # cpu8_pipeline.gin, gopher_280b_v3.gin, two more
UNIT = cost.analytic_costs("none")  # F = R = 1, V = 2, B = 3, I = W = 1


def _times(s):
    fwd, bwd = {}, {}
    for t, row in enumerate(s.slots):
        for d, op in enumerate(row):
            if op is not None:
                assert op.stage % s.stages == d  # a virtual stage runs on its own device
                key = (op.microbatch, op.stage)
                table = fwd if op.kind == FWD else bwd
                assert key not in table  # each op exactly once
                table[key] = t
    return fwd, bwd


@pytest.mark.parametrize("name, pp, mb, r", GRID)
def test_idle_slots_are_exactly_the_bubble_formula(name, pp, mb, r):
    s = make_schedule(name, pp, mb, r)
    fwd, bwd = _times(s)
    v = pp * r
    assert len(fwd) == len(bwd) == mb * v
    for (i, k), t in fwd.items():  # F after the previous stage's F; B after the next stage's B (or own F)
        assert k == 0 or fwd[(i, k - 1)] < t
        assert bwd[(i, k)] > (fwd[(i, k)] if k == v - 1 else bwd[(i, k + 1)])
    # Busy slots per device: R*MB forwards + R*MB backwards; idle = 2 (PP - 1) per device.
    assert s.num_slots == 2 * (r * mb + pp - 1)
    assert s.idle_slots() == 2 * (pp - 1) * pp
    assert Fraction(s.idle_slots(), s.num_slots * pp) == Fraction(pp - 1, r * mb + pp - 1)
    assert s.bubble() == pytest.approx(expected_bubble(name, pp, mb, r), abs=1e-12)


FULL = cost.analytic_costs("full")  # F = R = 1, V = 3, I = 2, W = 1
PROGRAMS = [("1f1b", 1, "hoisted"), ("1f1b", 1, "paired"), ("gpipe", 1, None), ("circular", 2, None),
            ("interleaved_1f1b", 2, "hoisted"), ("interleaved_1f1b", 2, "paired"), ("zero_bubble", 1, None),
            ("zero_bubble", 1, 2), ("zero_bubble", 1, 4)]  # zero_bubble: W in 1, 2, 4 layer groups


@pytest.mark.parametrize("name, r, where", PROGRAMS)
@pytest.mark.parametrize("pp, mb", ((2, 4), (4, 8), (8, 16)))
@pytest.mark.parametrize("costs", (UNIT, FULL), ids=("unit", "full"))
def test_executed_program_runs_each_op_once_after_its_inputs(name, r, where, pp, mb, costs):
    """Replays the program in lockstep: every op's inputs exist when it runs (results visible next
    slot; within a slot, ops run in order), and every microbatch/stage gets its forward, backward
    and weight gradient (every part of it) exactly once."""
    if name == "zero_bubble":
        s = make_schedule(name, pp, mb, r, op_costs=costs, max_pending_w=2, w_parts=(where or 1,))
    else:
        s = make_schedule(name, pp, mb, r, op_costs=costs, placement_name=where)
    _replay(s)


def _replay(s) -> None:
    """Asserts that program `s.program` runs every op once, after its inputs (see the test above)."""
    pp, mb = s.stages, s.microbatches
    last = s.virtual_stages - 1
    done = {}  # (kind, i, v) -> slot
    for t, row in enumerate(s.program):
        for d, ops in enumerate(row):
            here = set()
            for op in ops:
                i, v, k = op.microbatch, op.stage, op.kind
                assert v % pp == d and (k, i, v, op.part) not in done
                sent = lambda kind, w: done.get((kind, i, w, 0), t) < t  # noqa: E731  (from a neighbour)
                mine = lambda kind: (kind, i, v, 0) in done or (kind, i, v, 0) in here  # noqa: E731
                has_input = v == 0 or sent("F", v - 1)
                has_grad = v == last or any(sent(kind, v + 1) for kind in "BVI")
                if k in "FRB":
                    assert has_input, (t, d, op)
                if k in "BVI":
                    assert has_grad, (t, d, op)
                if k in "VIW":
                    assert mine("R"), (t, d, op)
                if k == "W":
                    assert mine("I"), (t, d, op)
                here.add((k, i, v, op.part))
            for key in here:
                done[key] = t
    kinds = {k for (k, _, _, _) in done}
    for i in range(mb):
        for v in range(s.virtual_stages):
            forward = ("F", i, v, 0) in done or (v == last and (("R", i, v, 0) in done or ("B", i, v, 0) in done))
            backward = (("B", i, v, 0) in done or ("V", i, v, 0) in done or
                        all(("W", i, v, n) in done for n in range(s.w_parts)))
            assert forward and backward, (i, v, kinds)
    assert sum(k == "W" for (k, _, _, _) in done) in (0, mb * s.virtual_stages * s.w_parts)


@pytest.mark.parametrize("costs", (FULL, "280b_none"), ids=("full", "280b_none"))
@pytest.mark.parametrize("pp, mb", ((2, 4), (4, 12), (8, 16)))
def test_fill_programs_run_each_op_once_within_the_memory_bounds(pp, mb, costs):
    """zero_bubble_fill's programs, every rule zb_h1 tries, K = 1 and 2, W whole or in 4 parts: the replay
    above holds, and the executor's buffers keep at most P stage inputs, one residual set and K
    weight-gradient sets (what zero_bubble.py bounds), whether or not zb_h1 would keep the program."""
    costs = _stored_costs(COSTS_280B_NONE) if costs == "280b_none" else costs
    unit = make_schedule("1f1b", pp, mb)  # only its shape is used
    for rule, k, parts in itertools.product(zero_bubble.FILLS, (1, 2), (1, 4)):
        split = dataclasses.replace(unit, name="zero_bubble", w_parts=parts)
        prog = zero_bubble_fill.fill_program(pp, mb, lambda op: op_cost(split, costs, op), k, 1, parts, pp, rule)
        s = dataclasses.replace(split, program=prog)
        _replay(s)
        bufs = compile_program(s)
        assert bufs.act_slots <= pp and bufs.res_slots <= 1 and bufs.wg_slots <= k, (rule, k, parts)


@pytest.mark.parametrize("pp", (2, 4, 8))
def test_stash_and_kept_sets_are_bounded_whatever_the_microbatches(pp):
    """Stage inputs held per device (the executor's interval-coloured buffers): GPipe all MB; 1F1B
    hoisted <= P (Megatron's P - d), paired <= 2P - 1 (hand-offs take a whole F + B slot each way);
    ZB-H1 <= P, one residual set and at most K weight-gradient sets (I -> W) per device."""
    seen = {}
    for mb in (pp, 3 * pp, 8 * pp):
        for costs in (UNIT, FULL):
            hoisted = compile_program(make_schedule("1f1b", pp, mb, op_costs=costs, placement_name="hoisted"))
            paired = compile_program(make_schedule("1f1b", pp, mb, op_costs=costs, placement_name="paired"))
            assert hoisted.act_slots <= pp and hoisted.res_slots == 1 and hoisted.wg_slots == 0
            assert paired.act_slots <= 2 * pp - 1 and paired.res_slots == 0  # B = R + V in one slot
            assert compile_program(make_schedule("gpipe", pp, mb, op_costs=costs)).act_slots == mb
            for k in (1, 2) if mb < 8 * pp or pp < 8 else ():  # (8 x 64: seconds per program)
                zb = compile_program(make_schedule("zero_bubble", pp, mb, op_costs=costs, max_pending_w=k,
                                                   w_parts=(1, 2)))
                assert zb.act_slots <= pp and zb.res_slots <= 1 and zb.wg_slots <= k, (mb, k)
            seen.setdefault("paired", set()).add(paired.act_slots if mb >= 3 * pp else None)
    assert len(seen["paired"] - {None}) == 1  # flat in MB once past the warm-up


@pytest.mark.parametrize("pp, r", [(2, 2), (4, 2), (4, 4), (8, 2)])
def test_interleaved_stash_is_bounded_in_microbatches(pp, r):
    """Megatron's bound 2(P - d - 1) + (R - 1) P + 1 in flight, whatever MB, in the unit table and in
    both placements' buffers; circular stashes R x MB."""
    bound = 2 * (pp - 1) + (r - 1) * pp + 1
    for mb in (2 * pp, 8 * pp):
        s = make_schedule("interleaved_1f1b", pp, mb, r)
        assert [s.max_in_flight(d) for d in range(pp)] == [min(2 * (pp - d - 1) + (r - 1) * pp + 1, r * mb)
                                                           for d in range(pp)]
        for where in ("hoisted", "paired"):
            table = make_schedule("interleaved_1f1b", pp, mb, r, placement_name=where)
            assert compile_program(table).act_slots <= bound
    assert compile_program(make_schedule("circular", pp, 8 * pp, r)).act_slots == r * 8 * pp


def test_previous_executor_reproduces_the_issue_table():
    """Before issue 18: one op per device per slot, B = recompute + VJP (F=1, B=3), the last stage's
    forward skipped (placement.fused_backward). GPipe ran at its formula, 1F1B near 2/3 whatever MB."""
    def eff(name, pp, mb):
        s = make_schedule(name, pp, mb)
        return cost.executed_efficiency(s, UNIT, placement.fused_backward(s))
    assert [round(eff("gpipe", pp, mb), 2) for pp, mb in ISSUE_ROWS] == [0.84, 0.81, 0.92, 0.83]
    assert [round(eff("1f1b", pp, mb), 3) for pp, mb in ISSUE_ROWS] == [0.615, 0.585, 0.634, 0.587]


SEQ = 64  # op costs compiled at a short sequence: every assertion below must hold for *any* costs, and
# the compiles stay cheap (attention's T^2 share, hence the exact ratios, depends on the length)
MODELS = ("gopher_44m", "gopher_7_1b")


def _model(name: str, remat: str) -> ModelConfig:
    gin.clear_config()
    gin.parse_config_files_and_bindings([f"gin_configs/models/{name}.gin"], [])
    cfg = ModelConfig()
    gin.clear_config()
    return cfg.replace(remat_policy=remat)


@functools.lru_cache(maxsize=None)
def _compiled(name: str, remat: str, layers: int) -> cost.OpCosts:
    """Op costs of one virtual stage of `layers` layers (compiled_op_costs caches each branch's two
    compiles, so every layer count after the first is free)."""
    return compiled_op_costs.measured_costs(_model(name, remat), SEQ, layers)


def _balanced(costs: cost.OpCosts) -> cost.OpCosts:
    """The middle stage's compiled costs at every position: equal stages, the formulas' assumption."""
    return cost.OpCosts({**{(k, p): costs(k, "mid") for k in "FRVB" for p in cost.POSITIONS},
                         ("F", "last"): 0.0}, "balanced")


@pytest.mark.parametrize("remat", ("none", "full"))
@pytest.mark.parametrize("model", MODELS)
def test_executed_efficiency_is_at_or_above_the_formula_at_compiled_costs(model, remat):
    """The table the issue asked for: GPipe, 1F1B and interleaved 1F1B (repeats 2), each program built
    for (its placement chosen at) the costs it is priced with, P in {2, 4, 8}, MB in {P, 3P, 8P}.

    Equal stages (each shape's compiled F : R : V of a middle stage everywhere): executed >= formula for
    all three, no slack. The real stages (embedding on the first, head + loss on the last, compiled):
    1F1B still >= formula, no slack; GPipe and interleaved >= formula x (lightest / heaviest virtual
    stage's F + R + V): a lockstep slot waits for its heaviest stage, and the 44M's end stages are 2.5-4.6x
    a middle one (vocab 32k at d=512) -- stage balance, which no schedule fixes."""
    layers_total = _model(model, remat).num_layers
    rows = []
    for pp in (2, 4, 8):
        for mb in (pp, 3 * pp, 8 * pp):
            for name, r in (("gpipe", 1), ("1f1b", 1), ("interleaved_1f1b", 2)):
                real = _compiled(model, remat, max(1, layers_total // (pp * r)))
                formula = 1 - expected_bubble(name, pp, mb, r)
                work = [real("F", "first") + real("B", "first"), real("F", "mid") + real("B", "mid"),
                        real("B", "last")]
                balance = min(work[:1] + work[1:2] * (pp * r > 2) + work[2:]) / max(work)
                for costs, bound in ((_balanced(real), formula),
                                     (real, formula if name == "1f1b" else formula * balance)):
                    s = make_schedule(name, pp, mb, r, op_costs=costs)
                    executed = cost.executed_efficiency(s, costs)
                    rows.append((name, pp, mb, costs.source, s.placement, round(executed, 4), round(formula, 4)))
                    assert executed >= bound - 1e-9, rows[-1]
    print(model, remat, rows)


def test_issue_counter_example_hoisted_1f1b_under_remat_full():
    """Issue 28's table: with V = 3 units the hoisted placement ran 1F1B at 0.732 (formula 0.800) at P=4,
    MB=12 and 0.792 (0.914) at 4 x 32; the placement chosen at those costs (paired) meets the formula."""
    for (pp, mb), before in (((4, 12), 0.732), ((4, 32), 0.792)):
        hoisted = make_schedule("1f1b", pp, mb, op_costs=FULL, placement_name="hoisted")
        assert round(cost.executed_efficiency(hoisted, FULL), 3) == before
        chosen = make_schedule("1f1b", pp, mb, op_costs=FULL)
        assert chosen.placement == "paired"
        assert cost.executed_efficiency(chosen, FULL) >= 1 - expected_bubble("1f1b", pp, mb)


def _idle(s, costs) -> float:
    """Idle time per device of a program: its executed time minus the busiest device's reference work."""
    return sum(cost.slot_costs(s, costs)) - cost.reference_work(s, costs)


def _mid_idle(s, costs) -> float:
    """Idle time of device P - 2 (a middle stage), the one zero_bubble.bubble_lower_bound bounds: the
    executed time minus the work its program runs there (at compiled costs the first stage's embedding
    makes device 0 the busiest, so _idle is smaller by the difference)."""
    work = sum(op_cost(s, costs, op) for row in s.program for op in row[s.stages - 2])
    return sum(cost.slot_costs(s, costs)) - work


@pytest.mark.parametrize("remat", ("none", "full"))
@pytest.mark.parametrize("pp, mb", ((3, 9), (4, 4), (4, 12), (8, 24)))
def test_zero_bubble_meets_its_lower_bound_at_whole_unit_costs(remat, pp, mb):
    """The least bubble of any lockstep ZB program with K weight-gradient sets is (P - 2)(F + I) + (1 - K) W
    (zero_bubble.py derives it: a middle device waits (P - 2) F for its first input, and after its last I
    the last microbatch's I crosses P - 2 more devices and device 0 runs its W, while the device has at
    most K W's left). With whole-unit op costs (F = R = W = 1, I = 1 or 2 with remat 'full') the program
    meets it exactly, for K = 1 and 2."""
    costs = cost.analytic_costs(remat)
    f, i, w = (costs(k, "mid") for k in "FIW")
    for k in (1, 2):
        s = make_schedule("zero_bubble", pp, mb, op_costs=costs, max_pending_w=k, w_parts=(1, 2))
        bound = zero_bubble.bubble_lower_bound(pp, f, i, w, k)
        assert _idle(s, costs) == pytest.approx(bound, abs=1e-9), (k, s.placement)


def test_zero_bubble_h1_is_a_third_of_1f1b_when_i_is_at_most_k_w():
    """ZB-H1's claim, a bubble of a third of 1F1B's (P - 1)(F + R + V), at P = 4, MB = 12: met exactly at
    the paper's equal costs (remat 'none' unit costs: I = W) with one weight-gradient set. With remat
    'full' (I = 2 W) one set leaves (P - 2)(F + I) = 6 > 5 = a third: the bound needs K >= I / W = 2, and
    with 2 sets the program is at a third again."""
    pp, mb = 4, 12
    for remat, k, third in (("none", 1, True), ("full", 1, False), ("full", 2, True)):
        costs = cost.analytic_costs(remat)
        s = make_schedule("zero_bubble", pp, mb, op_costs=costs, max_pending_w=k, w_parts=(1, 2))
        one_f1b = (pp - 1) * (costs("F", "mid") + costs("B", "mid"))  # 1F1B's formula idle time
        print(remat, k, s.placement, "idle", _idle(s, costs), "a third of 1F1B's", one_f1b / 3)
        assert (_idle(s, costs) <= one_f1b / 3 + 1e-9) == third, (remat, k)
        if third:
            assert _idle(s, costs) == pytest.approx(one_f1b / 3)
    unit = make_schedule("zero_bubble", pp, mb, op_costs=UNIT)
    assert cost.executed_efficiency(unit, UNIT) == pytest.approx(1 - expected_bubble("zero_bubble", pp, mb))


# Op costs of the 280B recipe's stage (gin_configs/parallel/gopher_280b_v3.gin: 20 layers, seq 2048, remat
# 'full'), compiled as `plan` compiles them (compiled_op_costs.measured_costs, split backward); stored
# because compiling them takes ~50 s on 2 cores. Regenerate: see the file's "command".
COSTS_280B = pathlib.Path(__file__).parent / "data" / "op_costs_gopher_280b_v3.json"


COSTS_280B_NONE = COSTS_280B.with_name("op_costs_gopher_280b_v3_zb_remat_none.json")  # pipeline.zero_bubble_remat='none'
COSTS_280B_DOTS = COSTS_280B.with_name("op_costs_gopher_280b_v3_zb_remat_dots_no_batch.json")  # the recipe's stages


def _stored_costs(path: pathlib.Path = COSTS_280B) -> cost.OpCosts:
    raw = json.loads(path.read_text())
    return cost.OpCosts({tuple(k.split(",")): v for k, v in raw["cost"].items()}, "compiled")


def check_zero_bubble_at_compiled_costs(name: str, costs: cost.OpCosts, layers: int, pp: int = 4, mb: int = 12,
                                        one_f1b_costs: cost.OpCosts | None = None):
    """ZB-H1 with one weight-gradient set at compiled op costs `costs` (its stages' remat: 'full', or 'none' =
    pipeline.zero_bubble_remat): the bubble is at least the lower bound (no program beats it), the bound is
    above a third of 1F1B's formula bubble at the same work (I > W: a third is out of reach, whatever the
    schedule), and the step is shorter than 1F1B's at `one_f1b_costs` (the recipe's 1F1B, remat 'full';
    default `costs`). Prints the figures ADR 0002 quotes, and returns them."""
    one_f1b_costs = one_f1b_costs or costs
    f, i, w = (costs(k, "mid") for k in "FIW")
    s = make_schedule("zero_bubble", pp, mb, op_costs=costs, max_pending_w=1, w_parts=zero_bubble.part_choices(layers))
    one_f1b = make_schedule("1f1b", pp, mb, op_costs=one_f1b_costs)
    bound = zero_bubble.bubble_lower_bound(pp, f, i, w, 1)
    third = (pp - 1) * (f + costs("B", "mid")) / 3  # at the same work per microbatch
    third_1f1b = (pp - 1) * (one_f1b_costs("F", "mid") + one_f1b_costs("B", "mid")) / 3  # of the 1F1B it replaces
    executed, ref = cost.executed_efficiency(s, costs), cost.reference_work(s, costs)
    formula, one_f1b_executed = 1 - expected_bubble("zero_bubble", pp, mb), cost.executed_efficiency(one_f1b, one_f1b_costs)
    time_ratio = sum(cost.slot_costs(s, costs)) / sum(cost.slot_costs(one_f1b, one_f1b_costs))
    print(f"{name}: ZB-H1 ({s.placement}) executed {executed:.4f} (formula {formula:.4f}),"
          f" idle {_idle(s, costs) / f:.2f} F; lower bound {bound / f:.2f} F (efficiency <= {ref / (ref + bound):.4f});"
          f" a third of 1F1B's formula bubble {third / f:.2f} F at the same work, {third_1f1b / f:.2f} F of the remat"
          f" 'full' 1F1B's; 1F1B executed {one_f1b_executed:.4f}; ZB / 1F1B step {time_ratio:.3f};"
          f" F : R : I : W = 1 : {costs('R', 'mid') / f:.3f} : {i / f:.3f} : {w / f:.3f}, I / W {i / w:.3f}")
    assert _mid_idle(s, costs) >= bound - 1e-9 * f
    assert bound > third and i > w
    assert time_ratio < 1
    return {"executed": executed, "bound_efficiency": ref / (ref + bound), "idle_f": _idle(s, costs) / f,
            "third_f": third / f, "third_1f1b_f": third_1f1b / f, "time_ratio": time_ratio}


def test_zero_bubble_at_the_280b_recipes_costs():
    """The 280B recipe's pipeline (P = 4, MB = 12, 20 layers a stage) at its stored compiled op costs, with
    the remat 'full' stage and with pipeline.zero_bubble_remat='none'; the same check at the toy's compiled
    costs is in test_pipeline_memory.py (compiled there anyway). 'none' (I / W 1.15, not 1.93) brings the
    bound below a third of the remat 'full' 1F1B's bubble, but not below a third at its own work (K = 2 is:
    test_zero_bubble_with_two_sets_is_a_third_of_1f1b_at_the_280b_costs); the program is ~1.3 points above
    the bound (zero_bubble_fill's; the list scheduler alone was ~3: every slot holding an I costs I)."""
    full = check_zero_bubble_at_compiled_costs("gopher_280b_v3", _stored_costs(), 20)
    none = check_zero_bubble_at_compiled_costs("gopher_280b_v3, ZB stages remat 'none'", _stored_costs(COSTS_280B_NONE),
                                               20, one_f1b_costs=_stored_costs())
    formula = 1 - expected_bubble("zero_bubble", 4, 12)
    assert none["executed"] > full["executed"] and none["time_ratio"] < 0.85 * full["time_ratio"]
    assert none["bound_efficiency"] < formula < none["bound_efficiency"] + 0.005  # just out of reach at K = 1
    assert none["third_f"] < none["third_1f1b_f"] < none["idle_f"]  # the program's bubble: not a third of either
    # the recipe's stages ('dots_no_batch': I also recomputes the attention-score matmuls): between the two
    dots = check_zero_bubble_at_compiled_costs("gopher_280b_v3, ZB stages remat 'dots_no_batch' (the recipe)",
                                               _stored_costs(COSTS_280B_DOTS), 20, one_f1b_costs=_stored_costs())
    assert full["executed"] < dots["executed"] <= none["executed"] and dots["time_ratio"] < 0.85 * full["time_ratio"]
    assert dots["bound_efficiency"] < formula


@pytest.mark.parametrize("stages_remat, path", (("none", COSTS_280B_NONE), ("dots_no_batch", COSTS_280B_DOTS)))
def test_zero_bubble_with_two_sets_is_a_third_of_1f1b_at_the_280b_costs(stages_remat, path):
    """Issue 28's target at the 280B recipe's shape (P = 4, MB = 12, 20 layers a stage) and stored compiled op
    costs: with K = 2 weight-gradient sets (pipeline.max_pending_weight_grads) the executed bubble is at most a
    third of 1F1B's formula bubble at the same work, (P - 1)(F + B) / 3, no slack, and a middle device idles at
    least the lower bound. zero_bubble_fill's program gets there (the list scheduler's best: 0.911 / 0.904
    efficiency, short of the 0.9235 a third needs); with K = 1 the bound itself is above a third."""
    pp, mb, k = 4, 12, 2
    costs = _stored_costs(path)
    f, i, w = (costs(kind, "mid") for kind in "FIW")
    s = make_schedule("zero_bubble", pp, mb, op_costs=costs, max_pending_w=k, w_parts=zero_bubble.part_choices(20))
    one_set = make_schedule("zero_bubble", pp, mb, op_costs=costs, max_pending_w=1,
                            w_parts=zero_bubble.part_choices(20))
    bufs = compile_program(s)
    idle, ref = _idle(s, costs), cost.reference_work(s, costs)
    third = (pp - 1) * (f + costs("B", "mid")) / 3
    bound = zero_bubble.bubble_lower_bound(pp, f, i, w, k)
    print(f"280B, stages '{stages_remat}', K = {k} ({s.placement}): executed {ref / (ref + idle):.4f},"
          f" idle {idle / f:.3f} F"
          f" (middle device {_mid_idle(s, costs) / f:.3f} F); a third of 1F1B's {third / f:.3f} F (efficiency"
          f" {ref / (ref + third):.4f}); lower bound {bound / f:.3f} F; {len(bufs.combos)} branches, kept sets"
          f" {bufs.wg_slots}; K = 1: {cost.executed_efficiency(one_set, costs):.4f} ({one_set.placement})")
    assert idle <= third and _mid_idle(s, costs) >= bound - 1e-9 * f
    assert bufs.act_slots <= pp and bufs.res_slots <= 1 and bufs.wg_slots == k
    assert _mid_idle(one_set, costs) >= zero_bubble.bubble_lower_bound(pp, f, i, w, 1) > third


def test_slot_cost_is_the_slowest_device():
    s = make_schedule("1f1b", 2, 4)
    costs = cost.slot_costs(s, UNIT)
    assert len(costs) == s.num_slots
    for row, c in zip(s.program, costs):
        assert c == max(sum(UNIT(op.kind, cost.position(s, op.stage)) for op in ops) for ops in row)
    # steady state: F+R on one device, V on the other -> 2 units on both
    assert max(costs) == 2.0


def test_table_chart_is_readable():
    chart = make_schedule("1f1b", 4, 6).table()
    print(chart)
    last = chart.splitlines()[3].split(": ")[1].split()
    assert last[:9] == [".", ".", ".", "F0", "B0", "F1", "B1", "F2", "B2"]  # warm-up wait, then 1F1B
    assert chart.splitlines()[0].split(": ")[1].split()[:4] == ["F0", "F1", "F2", "F3"]
    executed = make_schedule("1f1b", 4, 6).table(executed=True)
    print(executed)
    assert executed.splitlines()[3].split(": ")[1].split()[3:7] == ["R0", "V0", "R1", "V1"]
    assert "F4+R1" in executed.splitlines()[0]


def test_program_representation_has_no_import_circle():
    """program.py holds the representation; cost, placement, zero_bubble_fill and zero_bubble depend on it,
    not on each other or on schedule.py (which depends on all of them), except that zero_bubble runs
    zero_bubble_fill's builder beside its own and zero_bubble_search's refinement of it (zero_bubble_fill
    imports nothing but program.py; zero_bubble_search nothing but zero_bubble_fill)."""
    import ast
    import pathlib

    import gopher_jax.parallel.pipeline as pkg
    root = pathlib.Path(pkg.__file__).parent

    def imports(name):
        tree = ast.parse((root / f"{name}.py").read_text())
        found = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gopher_jax.parallel.pipeline"):
                tail = node.module.split(".")[-1]
                found |= {a.name for a in node.names} if tail == "pipeline" else {tail}
        return found

    assert imports("program") == set()
    for leaf in ("cost", "placement", "zero_bubble_fill"):
        assert imports(leaf) <= {"program"}, (leaf, imports(leaf))
    assert imports("zero_bubble_search") <= {"zero_bubble_fill"}
    assert imports("zero_bubble") == {"program", "zero_bubble_fill", "zero_bubble_search"}
    assert imports("schedule") == {"cost", "placement", "zero_bubble", "program"}


def test_one_slot_loop():
    """Every lockstep builder (unit tables, the paired placement, zero-bubble) closes its slots with
    program.Lockstep.close: one implementation of the slot-closing step."""
    import inspect

    from gopher_jax.parallel.pipeline import schedule
    for module in (schedule, placement, zero_bubble, zero_bubble_fill):
        src = inspect.getsource(module)
        assert "lock.close(" in src and "done[(" not in src, module.__name__


def test_max_w_parts_bounds_the_part_choices():
    """pipeline.max_w_parts caps the W layer-group counts make_schedule chooses among (1 = every W whole)."""
    from gopher_jax.parallel.pipeline import PipelineConfig
    assert zero_bubble.part_choices(20) == (1, 2, 10) and zero_bubble.part_choices(20, 1) == (1,)
    assert zero_bubble.part_choices(4, 3) == (1, 2) and zero_bubble.part_choices(3) == (1, 3)
    with pytest.raises(ValueError, match=r"max_w_parts=0 must be >= 1"):
        PipelineConfig(schedule="zero_bubble", max_w_parts=0)


def test_slot_by_slot_search_is_seeded_bounded_and_never_worse():
    """zero_bubble_search: the same program on every call (plan and the trainer must agree), never dearer
    than the best single-rule program it starts from, within the same memory bounds; tries < 0 refused."""
    from gopher_jax.parallel.pipeline import PipelineConfig
    from gopher_jax.parallel.pipeline.zero_bubble_search import lockstep_price
    costs = _stored_costs(COSTS_280B_NONE)
    split = make_schedule("zero_bubble", 4, 8, op_costs=costs, max_pending_w=2, w_parts=(2,))
    cost_of = lambda op: op_cost(split, costs, op)  # noqa: E731
    plain = zero_bubble.zb_h1(4, 8, cost_of, 2, w_parts=2)
    searched = [zero_bubble.zb_h1(4, 8, cost_of, 2, w_parts=2, search_tries=60) for _ in range(2)]
    assert searched[0] == searched[1]
    assert lockstep_price(searched[0], cost_of) <= lockstep_price(plain, cost_of) + 1e-9
    bufs = compile_program(dataclasses.replace(split, program=searched[0]))  # each op once, after its inputs
    assert bufs.act_slots <= 4 and bufs.res_slots <= 1 and bufs.wg_slots <= 2
    with pytest.raises(ValueError, match=r"zero_bubble_search_tries=-1 must be >= 0"):
        PipelineConfig(schedule="zero_bubble", zero_bubble_search_tries=-1)
