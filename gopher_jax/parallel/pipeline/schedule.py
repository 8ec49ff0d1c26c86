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
   op costs; zero_bubble.py for the two zero-bubble schedules). cost.py prices a program: a slot
   costs its most expensive device.

Virtual stages: the model's layers are cut into `stages * repeats` contiguous groups; group v runs on
device v % stages (repeats = 1 except `circular` and `interleaved_1f1b`).

  gpipe             all forwards, then all backwards (GPipe, Huang et al. 2019).
  1f1b              warm-up forwards, then one-forward-one-backward, then cool-down backwards
                    (PipeDream-Flush; Megatron/MT-NLG): at most `stages - d` microbatches in flight.
  circular          GPipe order over `stages * repeats` virtual stages (MaxText/Praxis "circular").
  interleaved_1f1b  Megatron's interleaved 1F1B (Narayanan et al. 2021): virtual stages in groups of
                    `stages` microbatches, 1F1B ordering; in flight at most 2(P-d-1) + (R-1) P + 1.
  zero_bubble       ZB-H1 (Qi et al. 2023): the backward split into I (input gradient, on the
                    critical path) and W (weight gradient), W deferred to fill the bubble; the unit
                    table keeps at most `stages - d` microbatches between F and W, like 1F1B.
  zero_bubble_greedy  1F1B's program, V split, W and R moved greedily into slack (zero_bubble.py).

Bubble of the unit table (idle / all (device, slot) pairs; all devices are equal):
  gpipe, 1f1b:                  (P - 1) / (MB + P - 1)
  circular, interleaved_1f1b:   (P - 1) / (R MB + P - 1)
The formulas `expected_bubble` returns (1 - formula efficiency; what plan reports beside the executed):
  gpipe, 1f1b:                  (P - 1) / (MB + P - 1)    (Megatron: the same with T_B = T_R + 2 T_F)
  circular, interleaved_1f1b:   (P - 1) / (R MB + P - 1)
  zero_bubble(_greedy):         (P - 1) / (3 MB + P - 1)  (ZB-H1 with T_F = T_I = T_W: a third of 1F1B's)
"""
from __future__ import annotations

import dataclasses

from gopher_jax.parallel.pipeline import cost, placement, zero_bubble
from gopher_jax.parallel.pipeline.program import BWD, BWD_INPUT, BWD_WEIGHT, FWD, RECOMPUTE, Op, Schedule, position

SCHEDULES = ("gpipe", "1f1b", "circular", "interleaved_1f1b", "zero_bubble", "zero_bubble_greedy")
ZERO_BUBBLE = ("zero_bubble", "zero_bubble_greedy")


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


class _Lockstep:
    """Dependency bookkeeping of a lockstep simulation (F, B ops): a result is visible from the next slot."""

    def __init__(self, stages: int, microbatches: int, repeats: int):
        self.v_total = stages * repeats
        self.done: dict[tuple[str, int, int], int] = {}  # (kind, microbatch, virtual stage) -> slot

    def ready(self, op: Op, t: int) -> bool:
        i, v = op.microbatch, op.stage
        before = lambda kind, w: self.done.get((kind, i, w), t) < t  # noqa: E731
        if op.kind == FWD:
            return v == 0 or before(FWD, v - 1)
        return before(FWD, v) if v == self.v_total - 1 else before(BWD, v + 1)

    def commit(self, row, t: int) -> None:
        for op in row:
            if op is not None:
                self.done[(op.kind, op.microbatch, op.stage)] = t


def _greedy(name: str, pp: int, mb: int, repeats: int) -> list:
    """gpipe / circular / 1f1b: each device picks among its ready ops every slot.

    gpipe, circular: a forward if any (lowest virtual stage, then microbatch), else a backward
    (highest virtual stage first). 1f1b: a backward if ready, else a forward while fewer than
    `stages - d` microbatches are in flight on device d."""
    v_total = pp * repeats
    sim = _Lockstep(pp, mb, repeats)
    todo = [[Op(k, i, v) for k in (FWD, BWD) for v in range(d, v_total, pp) for i in range(mb)] for d in range(pp)]
    in_flight = [0] * pp
    slots, t = [], 0
    while any(todo):
        if t > 16 * mb * v_total + 8 * pp:  # cannot happen for valid inputs; guards the loop
            raise RuntimeError(f"schedule {name} did not finish (stages={pp}, microbatches={mb})")
        row = []
        for d in range(pp):
            ready = [op for op in todo[d] if sim.ready(op, t)]
            f = sorted((o for o in ready if o.kind == FWD), key=lambda o: (o.stage, o.microbatch))
            b = sorted((o for o in ready if o.kind == BWD), key=lambda o: (-o.stage, o.microbatch))
            if name in ("gpipe", "circular"):
                op = (f or b or [None])[0]
            else:
                op = (b or (f if in_flight[d] < pp - d else []) or [None])[0]
            row.append(op)
        for d, op in enumerate(row):
            if op is not None:
                todo[d].remove(op)
                in_flight[d] += 1 if op.kind == FWD else -1
        sim.commit(row, t)
        slots.append(tuple(row))
        t += 1
    return slots


def _zero_bubble(pp: int, mb: int) -> list:
    """ZB-H1 on unit ops F, R, I, W (the recompute R is a unit op of its own; the last stage's forward
    is its R). Each device runs, in this priority, a ready I (the critical path), an R (at most one
    residual set kept per device), an F (at most `stages - d` microbatches between F and W, 1F1B's
    memory) or a pending W (fills what would be bubble)."""
    last = pp - 1
    done: dict[tuple[str, int, int], int] = {}
    todo = [[Op(k, i, d) for i in range(mb) for k in ((RECOMPUTE,) if d == last else (FWD, RECOMPUTE))
             + (BWD_INPUT, BWD_WEIGHT)] for d in range(pp)]
    in_flight, residuals = [0] * pp, [0] * pp
    slots, t = [], 0

    def ready(op: Op) -> bool:
        i, v = op.microbatch, op.stage
        before = lambda kind, w: done.get((kind, i, w), t) < t  # noqa: E731
        arrived = v == 0 or before(FWD, v - 1)
        if op.kind == FWD:
            return arrived
        if op.kind == RECOMPUTE:
            return arrived and (v == last or before(FWD, v))
        if op.kind == BWD_INPUT:
            return before(RECOMPUTE, v) and (v == last or before(BWD_INPUT, v + 1))
        return before(BWD_INPUT, v)

    while any(todo):
        if t > 16 * mb * pp + 8 * pp:  # cannot happen for valid inputs; guards the loop
            raise RuntimeError(f"zero_bubble did not finish (stages={pp}, microbatches={mb})")
        row = []
        for d in range(pp):
            room = in_flight[d] < pp - d
            pick = {k: [o for o in todo[d] if o.kind == k and ready(o)]
                    for k in (FWD, RECOMPUTE, BWD_INPUT, BWD_WEIGHT)}
            pick[FWD] = pick[FWD] if room else []
            pick[RECOMPUTE] = pick[RECOMPUTE] if residuals[d] < 1 and (d != last or room) else []
            row.append(next((pick[k][0] for k in (BWD_INPUT, RECOMPUTE, FWD, BWD_WEIGHT) if pick[k]), None))
        for d, op in enumerate(row):
            if op is None:
                continue
            todo[d].remove(op)
            done[(op.kind, op.microbatch, op.stage)] = t
            in_flight[d] += op.kind == FWD or (op.kind == RECOMPUTE and d == last)
            residuals[d] += op.kind == RECOMPUTE
            in_flight[d] -= op.kind == BWD_WEIGHT
            residuals[d] -= op.kind == BWD_WEIGHT
        slots.append(tuple(row))
        t += 1
    return slots


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
    sim = _Lockstep(pp, mb, repeats)
    pos, slots, t = [0] * pp, [], 0
    while any(p < len(o) for p, o in zip(pos, order)):
        if t > 8 * total * pp + 8 * pp:
            raise RuntimeError(f"interleaved_1f1b did not finish (stages={pp}, microbatches={mb})")
        row = []
        for d in range(pp):
            op = order[d][pos[d]] if pos[d] < len(order[d]) else None
            row.append(op if op is not None and sim.ready(op, t) else None)
        for d, op in enumerate(row):
            pos[d] += op is not None
        sim.commit(row, t)
        slots.append(tuple(row))
        t += 1
    return slots


def make_schedule(name: str, stages: int, microbatches: int, repeats: int = 1, op_costs=None,
                  max_pending_w: int = 2, placement_name: str | None = None) -> Schedule:
    """Returns a schedule: its unit table, built by simulating it in lockstep, and its executed program.

    `op_costs` (cost.OpCosts; None = the analytic unit costs of remat 'none') are the costs the program
    is fitted to: 1f1b and interleaved_1f1b take whichever of the hoisted and paired placements
    (placement.py) prices cheaper; zero_bubble places its W and R by them (zero_bubble.py).
    `placement_name` forces a placement. `max_pending_w` (zero_bubble_greedy) bounds microbatches
    between I and W."""
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
    cost_of = lambda op: costs(op.kind, position(unit, op.stage))  # noqa: E731
    if name in ZERO_BUBBLE:
        hoisted = make_schedule("1f1b", stages, microbatches, placement_name="hoisted").program
    if name == "zero_bubble":  # ZB-H1's memory either way: <= P stage inputs, 1 residual set, <= 2 W sets
        options = {"zb_h1_packed": zero_bubble.zb_h1(unit, cost_of),
                   "zb_h1_slack": zero_bubble.fill_slack(hoisted, stages, stages, cost_of, 1, 1)}
    elif name == "zero_bubble_greedy":
        options = {"greedy_fill": zero_bubble.fill_slack(hoisted, stages, stages, cost_of, max_pending_w)}
    elif placement_name is not None:
        options = {placement_name: placement.PLACEMENTS[placement_name](unit)}
    elif name in ("1f1b", "interleaved_1f1b"):
        options = {p: placement.PLACEMENTS[p](unit) for p in ("hoisted", "paired")}
    else:
        options = {"fused_backward": placement.fused_backward(unit)}
    price = {p: sum(cost.slot_costs(unit, costs, prog)) for p, prog in options.items()}
    best = min(options, key=lambda p: (price[p], p != "hoisted"))  # a tie keeps the unit-slot program
    return dataclasses.replace(unit, program=options[best], placement=best)
