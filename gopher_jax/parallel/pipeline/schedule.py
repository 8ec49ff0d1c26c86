"""Pipeline schedules as pure-Python tables, in two layers.

1. The *unit table* (`Schedule.slots`): for every time slot and device, the one op it runs (or None):
   F (stage forward), B (stage backward) or, for zero-bubble, B split into I (input gradient) and
   W (weight gradient). Time is counted in unit slots; the idle slots of this table are the bubble
   formulas below (`tests/parallel/test_pipeline_schedule.py` asserts them exactly).
2. The *executed program* (`Schedule.program`): what the executor (executor.py) runs in each
   lockstep slot, per device, as a tuple of executed ops:
     F  stage forward, result sent to the next stage   R  forward that keeps the VJP residuals
     V  backward from kept residuals (dx and dW)        B  R and V fused (recompute + backward)
     I  backward from kept residuals, dx only          W  backward from kept residuals, dW only
   A backward recomputes its stage's forward from the stashed stage input (only stage inputs are
   stashed between a microbatch's F and its backward). For 1f1b, interleaved_1f1b and zero_bubble the
   recompute R is *hoisted* into the device's previous forward slot, so a steady-state slot holds
   F+R (~2 forward units) or V (~2 units) on every device: lockstep slots cost the same everywhere.
   The last virtual stage runs R (forward + head + loss, residuals kept) in its forward slot.
   gpipe and circular keep B fused (all their backward slots are backward on every device anyway)
   and skip the last stage's forward (its B recomputes it). zero_bubble's unit table is ZB-H1's
   (F, R, I, W as unit ops, for its formula); its program is 1F1B's with V split into I + W and the
   W / R ops moved into slack, fitted to op costs (zero_bubble.py).
   cost.py prices the program: a slot costs its most expensive device.

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

Bubble of the unit table (idle / all (device, slot) pairs; all devices are equal):
  gpipe, 1f1b:                  (P - 1) / (MB + P - 1)
  circular, interleaved_1f1b:   (P - 1) / (R MB + P - 1)
  zero_bubble:                  (P - 1) / (3 MB + P - 1)   (unit F = I = W: a third of 1F1B's idle time)
"""
from __future__ import annotations

import dataclasses
from functools import cached_property
from typing import Optional

SCHEDULES = ("gpipe", "1f1b", "circular", "interleaved_1f1b", "zero_bubble")
FWD, BWD, BWD_INPUT, BWD_WEIGHT = "F", "B", "I", "W"  # unit-table kinds
RECOMPUTE, VJP = "R", "V"  # executed-only kinds (see the module docstring)
BACKWARD_KINDS = ("B", "V", "I", "W")


@dataclasses.dataclass(frozen=True)
class Op:
    kind: str  # F, B, I, W (unit table); F, R, V, B, I, W (executed program)
    microbatch: int
    stage: int  # virtual stage (0 .. stages*repeats - 1); runs on device stage % stages


@dataclasses.dataclass(frozen=True)
class Schedule:
    """slots[t][d] is the unit Op device d runs in time slot t, or None when it idles."""

    name: str
    stages: int  # devices on the pipeline axis
    repeats: int
    microbatches: int
    slots: tuple[tuple[Optional[Op], ...], ...]
    # zero_bubble only: the op costs its executed program is built for (cost.OpCosts; None = analytic
    # unit costs) and its bound on microbatches between I and W per device (zero_bubble.py)
    op_costs: Optional[object] = dataclasses.field(default=None, compare=False, repr=False)
    max_pending_w: int = 2

    @property
    def num_slots(self) -> int:
        return len(self.slots)

    @property
    def virtual_stages(self) -> int:
        return self.stages * self.repeats

    def idle_slots(self) -> int:
        """Idle (device, slot) pairs of the unit table over the whole step."""
        return sum(op is None for row in self.slots for op in row)

    def bubble(self) -> float:
        """Idle fraction of all (device, slot) pairs of the unit table."""
        return self.idle_slots() / (self.num_slots * self.stages)

    def max_in_flight(self, device: int) -> int:
        """Most microbatches whose forward ran on `device` but whose backward (W for zero-bubble) has not."""
        live = peak = 0
        start = (FWD, RECOMPUTE) if device == self.stages - 1 and self.name == "zero_bubble" else (FWD,)
        end = BWD_WEIGHT if self.name == "zero_bubble" else BWD
        for row in self.slots:
            op = row[device]
            if op is not None and (op.kind in start or op.kind == end):
                live += 1 if op.kind in start else -1
                peak = max(peak, live)
        return peak

    @cached_property
    def program(self) -> tuple[tuple[tuple[Op, ...], ...], ...]:
        """The executed program: program[t][d] = ops device d runs in slot t (module docstring)."""
        return _executed_program(self)

    def table(self, executed: bool = False) -> str:
        """A readable chart, one row per device: `F3`/`B3` = forward/backward of microbatch 3 (`r1` = its
        repeat), `.` = idle; `executed=True` charts the executed program (`F3+R2` = two ops in one slot)."""
        def cell(op):
            r = f"r{op.stage // self.stages}" if self.repeats > 1 else ""
            return op.kind + str(op.microbatch) + r

        rows = (self.program if executed else
                tuple(tuple(() if op is None else (op,) for op in row) for row in self.slots))
        cells = [["+".join(cell(op) for op in ops) or "." for ops in row] for row in rows]
        width = max(len(c) for row in cells for c in row)
        return "\n".join(f"dev{d}: " + " ".join(row[d].rjust(width) for row in cells)
                         for d in range(self.stages))


def expected_bubble(name: str, stages: int, microbatches: int, repeats: int = 1) -> float:
    """The closed-form bubble of the unit tables (module docstring); 1 - this is the formula efficiency."""
    work = microbatches * (repeats if name in ("circular", "interleaved_1f1b") else 1)
    if name == "zero_bubble":
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
    if name in ("1f1b", "circular", "interleaved_1f1b", "zero_bubble") and microbatches < stages:
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
                  max_pending_w: int = 2) -> Schedule:
    """Returns the unit table of a schedule, built by simulating it in lockstep (module docstring).

    zero_bubble only: `op_costs` (cost.OpCosts) are the costs its executed program is fitted to
    (None: the analytic unit costs) and `max_pending_w` bounds microbatches between I and W."""
    check(name, stages, microbatches, repeats)
    if max_pending_w < 1:
        raise ValueError(f"pipeline.max_pending_weight_grads={max_pending_w} must be >= 1")
    if name == "interleaved_1f1b":
        slots = _interleaved(stages, microbatches, repeats)
    elif name == "zero_bubble":
        slots = _zero_bubble(stages, microbatches)
    else:
        slots = _greedy(name, stages, microbatches, repeats)
    return Schedule(name, stages, repeats, microbatches, tuple(slots), op_costs, max_pending_w)


def _executed_program(s: Schedule):
    """Unit table -> executed ops per (slot, device): see the module docstring."""
    last = s.virtual_stages - 1
    prog = [[[] for _ in range(s.stages)] for _ in range(s.num_slots)]
    fwd_at = {(op.microbatch, op.stage): t for t, row in enumerate(s.slots) for op in row
              if op is not None and op.kind == FWD}
    if s.name == "zero_bubble":  # 1F1B's program, backward split, W and R moved into slack (zero_bubble.py)
        from gopher_jax.parallel.pipeline import cost, zero_bubble
        costs = s.op_costs or cost.analytic_costs()
        return zero_bubble.fill_slack(make_schedule("1f1b", s.stages, s.microbatches),
                                      lambda op: costs(op.kind, cost.position(s, op.stage)), s.max_pending_w)
    hoist = s.name in ("1f1b", "interleaved_1f1b")
    for t, row in enumerate(s.slots):
        for d, op in enumerate(row):
            if op is None:
                continue
            i, v = op.microbatch, op.stage
            if op.kind == FWD:
                if v == last and hoist:  # the last stage's forward keeps its residuals for its V
                    prog[t][d].append(Op(RECOMPUTE, i, v))
                elif v != last:  # (gpipe, circular: the last stage's B recomputes its forward)
                    prog[t][d].append(op)
            elif v == last and hoist:  # its residuals come from the R in its forward slot
                prog[t][d].append(Op(VJP, i, v))
            elif not hoist:
                prog[t][d].append(op)
            else:  # hoist the recompute into the latest earlier slot of this device without backward work
                earliest = fwd_at[(i, v - 1)] + 1 if v > 0 else 0  # the stage input has arrived
                spot = next((u for u in range(t - 1, earliest - 1, -1)
                             if not any(o.kind in BACKWARD_KINDS or o.kind == RECOMPUTE for o in prog[u][d])), None)
                if spot is None:  # nowhere to put it: recompute and backward fused, as in gpipe
                    prog[t][d].append(op)
                else:
                    prog[spot][d].append(Op(RECOMPUTE, i, v))
                    prog[t][d].append(Op(VJP, i, v))
    # in a slot, backward ops run first (they free buffers), then F, then R (it fills a buffer)
    rank = {BWD: 0, VJP: 0, FWD: 1, RECOMPUTE: 2}
    return tuple(tuple(tuple(sorted(ops, key=lambda o: rank[o.kind])) for ops in row) for row in prog)
