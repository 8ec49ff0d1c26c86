"""Pipeline schedules as pure-Python tables, in two layers.

1. The *unit table* (`Schedule.slots`): for every time slot and device, the one op it runs (or None):
   F (stage forward), B (stage backward) or, for zero-bubble, B split into I (input gradient) and
   W (weight gradient). Time is counted in unit slots; the idle slots of this table are the bubble
   formulas below (`tests/parallel/test_pipeline_schedule.py` asserts them exactly).
2. The *executed program* (`Schedule.program`, kinds in program.py): what the executor (executor.py)
   runs in each lockstep slot, per device, as a tuple of ops. A backward recomputes its stage from
   the stashed stage input (R), so only stage inputs are stashed between a microbatch's F and its
   backward. How the unit table becomes the program is a *placement* (placement.py: fused_backward
   for gpipe/circular; hoisted or paired for 1f1b/interleaved_1f1b, whichever prices cheaper at the
   op costs; zero_bubble.py places zero-bubble's program at the op costs within its memory bounds).
   cost.py prices a program: a slot costs its most expensive device.

Virtual stages: the model's layers are cut into `stages * repeats` contiguous groups; group v runs on
device v % stages (repeats = 1 except `circular` and `interleaved_1f1b`).

  gpipe             all forwards, then all backwards (GPipe, Huang et al. 2019).
  1f1b              warm-up forwards, then one-forward-one-backward, then cool-down backwards
                    (PipeDream-Flush; Megatron/MT-NLG): at most `stages - d` microbatches in flight.
  circular          GPipe order over `stages * repeats` virtual stages (MaxText/Praxis "circular").
  interleaved_1f1b  Megatron's interleaved 1F1B (Narayanan et al. 2021): virtual stages in groups of
                    `stages` microbatches, 1F1B ordering; in flight at most 2(P-d-1) + (R-1) P + 1.
  zero_bubble       ZB-H1 (Qi et al. 2023): the backward split into I (input gradient, on the
                    critical path) and W (weight gradient), W deferred to fill the bubble; at most
                    `stages` stage inputs, one residual set and `pipeline.max_pending_weight_grads`
                    weight-gradient sets per device (zero_bubble.py).

Bubble of the unit table (idle / all (device, slot) pairs; all devices are equal):
  gpipe, 1f1b:                  (P - 1) / (MB + P - 1)
  circular, interleaved_1f1b:   (P - 1) / (R MB + P - 1)
The formulas `expected_bubble` returns (1 - formula efficiency; what plan reports beside the executed):
  gpipe, 1f1b:                  (P - 1) / (MB + P - 1)    (Megatron: the same with T_B = T_R + 2 T_F)
  circular, interleaved_1f1b:   (P - 1) / (R MB + P - 1)
  zero_bubble:                  (P - 1) / (3 MB + P - 1)  (ZB-H1 with T_F = T_I = T_W: a third of 1F1B's;
                                what no lockstep program beats at real costs: zero_bubble.bubble_lower_bound)
"""
from __future__ import annotations

import dataclasses
import functools

from gopher_jax.parallel.pipeline import cost, placement, zero_bubble
from gopher_jax.parallel.pipeline.program import (BWD, BWD_INPUT, BWD_WEIGHT, FWD, RECOMPUTE, Lockstep, Op, Schedule,
                                                  op_cost)

SCHEDULES = ("gpipe", "1f1b", "circular", "interleaved_1f1b", "zero_bubble")
ZERO_BUBBLE = ("zero_bubble",)


def expected_bubble(name: str, stages: int, microbatches: int, repeats: int = 1) -> float:
    """The closed-form bubble of the unit tables (module docstring); 1 - this is the formula efficiency."""
    work = microbatches * (repeats if name in ("circular", "interleaved_1f1b") else 1)
    if name in ZERO_BUBBLE:
        work = 3 * microbatches
    return (stages - 1) / (work + stages - 1)


def uses_repeats(name: str) -> bool:
    return name in ("circular", "interleaved_1f1b")


def check(name: str, stages: int, microbatches: int, repeats: int = 1, num_layers: int | None = None) -> None:
    """Raises ValueError naming the value and the fix when a schedule cannot run."""
    if name not in SCHEDULES:
        raise ValueError(f"pipeline.schedule={name!r} is not one of {SCHEDULES}")
    if stages < 1 or microbatches < 1 or repeats < 1:
        raise ValueError(f"pipeline stages={stages}, microbatches={microbatches}, repeats={repeats} must be >= 1")
    if not uses_repeats(name) and repeats != 1:
        raise ValueError(f"pipeline.repeats={repeats} only applies to pipeline.schedule='circular' or "
                         f"'interleaved_1f1b' (got {name!r}); set pipeline.repeats=1 or change the schedule")
    if uses_repeats(name) and repeats < 2:
        raise ValueError(f"pipeline.schedule={name!r} needs pipeline.repeats >= 2 (got {repeats}); "
                         f"with one repeat use pipeline.schedule='{'gpipe' if name == 'circular' else '1f1b'}'")
    if name != "gpipe" and microbatches < stages:
        raise ValueError(f"pipeline.schedule={name!r} needs at least as many microbatches as stages: "
                         f"microbatches={microbatches} < MeshConfig.pipeline={stages}; use train.microbatches "
                         f">= {stages} (4 x stages keeps the bubble under 20%)")
    if name == "interleaved_1f1b" and microbatches % stages:
        raise ValueError(f"pipeline.schedule='interleaved_1f1b' runs microbatches in groups of MeshConfig.pipeline="
                         f"{stages} (Megatron's rule): microbatches={microbatches} is not a multiple; use "
                         f"{(microbatches // stages + 1) * stages}")
    if num_layers is not None and num_layers % (stages * repeats):
        ok = [s for s in range(1, num_layers + 1) if num_layers % (s * repeats) == 0]
        raise ValueError(f"ModelConfig.num_layers={num_layers} does not split into MeshConfig.pipeline={stages}"
                         f" x pipeline.repeats={repeats} = {stages * repeats} equal stages; use "
                         f"MeshConfig.pipeline in {ok} or ModelConfig.num_layers a multiple of {stages * repeats}")


def _ready(lock: Lockstep, op: Op, v_total: int) -> bool:
    """F after the previous virtual stage's F; B after the next one's B (the last stage: after its own F)."""
    i, v = op.microbatch, op.stage
    if op.kind == FWD:
        return v == 0 or lock.before(FWD, i, v - 1)
    return lock.before(FWD, i, v) if v == v_total - 1 else lock.before(BWD, i, v + 1)


def _unit_slots(lock: Lockstep) -> list:
    """The unit table of a lockstep run that placed at most one op per device per slot."""
    return [tuple(ops[0] if ops else None for ops in row) for row in lock.program]


def _greedy(name: str, pp: int, mb: int, repeats: int) -> list:
    """gpipe / circular / 1f1b: each device picks among its ready ops every slot.

    gpipe, circular: a forward if any (lowest virtual stage, then microbatch), else a backward
    (highest virtual stage first). 1f1b: a backward if ready, else a forward while fewer than
    `stages - d` microbatches are in flight on device d."""
    v_total = pp * repeats
    lock = Lockstep(f"schedule {name} (stages={pp}, microbatches={mb})", 16 * mb * v_total + 8 * pp)
    todo = [[Op(k, i, v) for k in (FWD, BWD) for v in range(d, v_total, pp) for i in range(mb)] for d in range(pp)]
    in_flight = [0] * pp
    while any(todo):
        row = []
        for d in range(pp):
            ready = [op for op in todo[d] if _ready(lock, op, v_total)]
            f = sorted((o for o in ready if o.kind == FWD), key=lambda o: (o.stage, o.microbatch))
            b = sorted((o for o in ready if o.kind == BWD), key=lambda o: (-o.stage, o.microbatch))
            if name in ("gpipe", "circular"):
                op = (f or b or [None])[0]
            else:
                op = (b or (f if in_flight[d] < pp - d else []) or [None])[0]
            row.append([] if op is None else [op])
        for d, ops in enumerate(row):
            for op in ops:
                todo[d].remove(op)
                in_flight[d] += 1 if op.kind == FWD else -1
        lock.close(row)
    return _unit_slots(lock)


def _zero_bubble(pp: int, mb: int) -> list:
    """ZB-H1's unit table on unit ops F, R, I, W (the recompute R is a unit op of its own; the last
    stage's forward is its R), the chart `Schedule.table` draws: each device runs, in this priority, a
    ready I (the critical path), an R (one residual set per device), an F (at most `stages - d`
    microbatches between F and W, 1F1B's bound) or a pending W. The executed program is placed at the
    op costs by zero_bubble.zb_h1."""
    last = pp - 1
    lock = Lockstep(f"zero_bubble (stages={pp}, microbatches={mb})", 16 * mb * pp + 8 * pp)
    todo = [[Op(k, i, d) for i in range(mb) for k in ((RECOMPUTE,) if d == last else (FWD, RECOMPUTE))
             + (BWD_INPUT, BWD_WEIGHT)] for d in range(pp)]
    in_flight, residuals = [0] * pp, [0] * pp

    def ready(op: Op) -> bool:
        i, v = op.microbatch, op.stage
        arrived = v == 0 or lock.before(FWD, i, v - 1)
        if op.kind == FWD:
            return arrived
        if op.kind == RECOMPUTE:
            return arrived and (v == last or lock.before(FWD, i, v))
        if op.kind == BWD_INPUT:
            return lock.before(RECOMPUTE, i, v) and (v == last or lock.before(BWD_INPUT, i, v + 1))
        return lock.before(BWD_INPUT, i, v)

    while any(todo):
        row = []
        for d in range(pp):
            room = in_flight[d] < pp - d
            pick = {k: [o for o in todo[d] if o.kind == k and ready(o)]
                    for k in (FWD, RECOMPUTE, BWD_INPUT, BWD_WEIGHT)}
            pick[FWD] = pick[FWD] if room else []
            pick[RECOMPUTE] = pick[RECOMPUTE] if residuals[d] < 1 and (d != last or room) else []
            op = next((pick[k][0] for k in (BWD_INPUT, RECOMPUTE, FWD, BWD_WEIGHT) if pick[k]), None)
            row.append([] if op is None else [op])
        for d, ops in enumerate(row):
            for op in ops:
                todo[d].remove(op)
                in_flight[d] += op.kind == FWD or (op.kind == RECOMPUTE and d == last)
                residuals[d] += op.kind == RECOMPUTE
                in_flight[d] -= op.kind == BWD_WEIGHT
                residuals[d] -= op.kind == BWD_WEIGHT
        lock.close(row)
    return _unit_slots(lock)


def _interleaved(pp: int, mb: int, repeats: int) -> list:
    """Megatron's interleaved 1F1B: each device runs its fixed op order, waiting when the next op is
    not ready. Forward k on device d: chunk (k // P) % R, microbatch (k // (P R)) P + k % P; backwards
    the same with chunks reversed; warm-up 2 (P - d - 1) + (R - 1) P forwards, then 1F1B."""
    total = mb * repeats
    order = []
    for d in range(pp):
        def fwd(k):
            return Op(FWD, (k // (pp * repeats)) * pp + k % pp, ((k // pp) % repeats) * pp + d)

        def bwd(k):
            return Op(BWD, (k // (pp * repeats)) * pp + k % pp, (repeats - 1 - (k // pp) % repeats) * pp + d)

        warm = min(2 * (pp - d - 1) + (repeats - 1) * pp, total)
        ops = [fwd(k) for k in range(warm)]
        for k in range(total - warm):
            ops += [fwd(warm + k), bwd(k)]
        ops += [bwd(k) for k in range(total - warm, total)]
        order.append(ops)
    v_total = pp * repeats
    lock = Lockstep(f"interleaved_1f1b (stages={pp}, microbatches={mb})", 8 * total * pp + 8 * pp)
    pos = [0] * pp
    while any(p < len(o) for p, o in zip(pos, order)):
        row = []
        for d in range(pp):
            op = order[d][pos[d]] if pos[d] < len(order[d]) else None
            row.append([op] if op is not None and _ready(lock, op, v_total) else [])
        for d, ops in enumerate(row):
            pos[d] += len(ops)
        lock.close(row)
    return _unit_slots(lock)


@functools.lru_cache(maxsize=64)
def _zero_bubble_program(stages: int, microbatches: int, cost_items: tuple, max_pending_w: int, w_parts: int,
                         search_tries: int = 0) -> tuple:
    """zero_bubble.zb_h1's program at the op costs `cost_items` ((kind, position) -> cost pairs), cached:
    it tries ~70 programs (about a second at 20-layer stages), and plan and the trainer ask for the same."""
    split = Schedule("zero_bubble", stages, 1, microbatches, (), w_parts=w_parts)
    costs = cost.OpCosts(dict(cost_items), "cached")
    return zero_bubble.zb_h1(stages, microbatches, lambda op: op_cost(split, costs, op), max_pending_w, w_parts=w_parts,
                             search_tries=search_tries)


def make_schedule(name: str, stages: int, microbatches: int, repeats: int = 1, op_costs=None,
                  max_pending_w: int = 1, placement_name: str | None = None, w_parts=(1,),
                  search_tries: int = 0) -> Schedule:
    """Returns a schedule: its unit table, built by simulating it in lockstep, and its executed program.

    `op_costs` (cost.OpCosts; None = the analytic unit costs of remat 'none') are the costs the program
    is fitted to: 1f1b and interleaved_1f1b take whichever of the hoisted and paired placements
    (placement.py) prices cheaper; zero_bubble places its ops by them (zero_bubble.py) with at most
    `max_pending_w` weight-gradient sets kept per device, each W run as one of `w_parts` (the cheapest;
    each a divisor of the layers per stage) ops over equal layer groups, and with `search_tries` > 0 the
    program refined slot by slot (zero_bubble_search.py). `placement_name` forces a placement."""
    check(name, stages, microbatches, repeats)
    if max_pending_w < 1:
        raise ValueError(f"pipeline.max_pending_weight_grads={max_pending_w} must be >= 1")
    if name == "interleaved_1f1b":
        slots = _interleaved(stages, microbatches, repeats)
    elif name in ZERO_BUBBLE:
        slots = _zero_bubble(stages, microbatches)
    else:
        slots = _greedy(name, stages, microbatches, repeats)
    unit = Schedule(name, stages, repeats, microbatches, tuple(slots))
    costs = op_costs or cost.analytic_costs()
    if name == "zero_bubble":
        options = {}
        for n in w_parts:
            split = dataclasses.replace(unit, w_parts=n)
            prog = _zero_bubble_program(stages, microbatches, tuple(sorted(costs.cost.items())), max_pending_w, n,
                                        search_tries)
            name_n = "zb_h1" + (f"/{n}" if n > 1 else "")
            options[f"zb_h1/{n}"] = dataclasses.replace(split, program=prog, placement=name_n)
        price = {p: sum(cost.slot_costs(s, costs)) for p, s in options.items()}
        return options[min(options, key=lambda p: (price[p], int(p.split("/")[1])))]
    if placement_name is not None:
        options = {placement_name: placement.PLACEMENTS[placement_name](unit)}
    elif name in ("1f1b", "interleaved_1f1b"):
        options = {p: placement.PLACEMENTS[p](unit) for p in ("hoisted", "paired")}
    else:
        options = {"fused_backward": placement.fused_backward(unit)}
    price = {p: sum(cost.slot_costs(unit, costs, prog)) for p, prog in options.items()}
    best = min(options, key=lambda p: (price[p], p != "hoisted"))  # a tie keeps the unit-slot program
    return dataclasses.replace(unit, program=options[best], placement=best)
