"""Zero-bubble programs: ZB-H1 (`zero_bubble`) and a greedy slack filler (`zero_bubble_greedy`).

ZB-H1 (Qi et al. 2023, "Zero Bubble Pipeline Parallelism", section 3.1) is 1F1B whose backward is split
into I (input gradient, on the critical path) and W (weight gradient, which nothing waits for): W is
deferred into the cool-down bubbles, and a device keeps at most `stages - d` microbatches between F and
W, 1F1B's bound. schedule._zero_bubble builds its unit table with unit ops F, R (the stage recompute,
ours: a backward recomputes the stage from its stashed input), I and W. Lockstep slots cost their
slowest device, so the executed program is whichever of two placements prices cheaper at the op costs
(cost.py), both within ZB-H1's memory -- stage inputs <= stages, one residual set (R -> I), at most
two weight-gradient sets (R -> W: every Dense's input, then its output cotangent) per device:
  zb_h1_packed  `zb_h1`: each device runs the unit table's order, packing consecutive ready ops into
                one slot while its load stays within a budget (the cheapest of a few); with equal op
                costs (the paper's T_F = T_I = T_W) this is the unit table itself;
  zb_h1_slack   `fill_slack` with one pending W and one residual set: 1F1B's hoisted program, V split
                into I + W, W deferred (and R hoisted) into slots where the device would wait for a
                slower one; it fills lockstep slack better when I and W differ (remat 'full').

`zero_bubble_greedy` (issue 18's program): `fill_slack` with `pipeline.max_pending_weight_grads` (default
2) pending W and MAX_RESIDUALS residual sets: a little more slack filled, at the memory of up to
max_pending_w + MAX_RESIDUALS weight-gradient sets per device (`plan` reports them).
"""
from __future__ import annotations

from gopher_jax.parallel.pipeline.program import BWD, BWD_INPUT, BWD_WEIGHT, RECOMPUTE, VJP, Op

MAX_PENDING_W = 2  # microbatches between I and W per device (their Dense inputs + cotangents are kept)
MAX_RESIDUALS = 2  # residual sets (R -> I) per device


def split_backward(program) -> list:
    """1F1B's program with V -> I + W and a fused B -> R + I + W (same slot), as mutable lists."""
    out = []
    for row in program:
        new_row = []
        for ops in row:
            new = []
            for op in ops:
                i, v = op.microbatch, op.stage
                if op.kind == VJP:
                    new += [Op(BWD_INPUT, i, v), Op(BWD_WEIGHT, i, v)]
                elif op.kind == BWD:
                    new += [Op(RECOMPUTE, i, v), Op(BWD_INPUT, i, v), Op(BWD_WEIGHT, i, v)]
                else:
                    new.append(op)
            new_row.append(new)
        out.append(new_row)
    return out


class _Program:
    """A mutable program with the queries the slack filling needs."""

    def __init__(self, slots, stages: int, cost_of):
        self.slots, self.stages, self.cost_of = slots, stages, cost_of  # cost_of(op) -> float

    def load(self, t: int, d: int) -> float:
        return sum(self.cost_of(op) for op in self.slots[t][d])

    def cost(self, t: int) -> float:
        return max(self.load(t, d) for d in range(self.stages))

    def slot_of(self, kind: str, microbatch: int, stage: int) -> int:
        d = stage % self.stages
        return next(t for t, row in enumerate(self.slots) for op in row[d]
                    if op.kind == kind and op.microbatch == microbatch and op.stage == stage)

    def live(self, d: int, t: int, start: str, end: str) -> int:
        """Microbatches on device d whose `start` op ran by slot t and whose `end` op runs after it."""
        started = [op for row in self.slots[: t + 1] for op in row[d] if op.kind == start]
        return sum(self.slot_of(end, op.microbatch, op.stage) > t for op in started)

    def move(self, op: Op, src: int, dst: int) -> None:
        d = op.stage % self.stages
        self.slots[src][d].remove(op)
        self.slots[dst][d].append(op)


def _place(p: _Program, op: Op, t: int, max_pending_w: int, max_residuals: int, last_stage: int):
    """A slot to move `op` (now in slot t) into without raising that slot's cost, or None."""
    d = op.stage % p.stages
    c = p.cost_of(op)
    if op.kind == BWD_WEIGHT:
        candidates = range(t + 1, len(p.slots))
        bound = ("I", "W", max_pending_w)
    elif op.kind == RECOMPUTE and op.stage != last_stage:
        arrived = p.slot_of("F", op.microbatch, op.stage - 1) + 1 if op.stage > 0 else 0
        candidates = range(t - 1, arrived - 1, -1)
        bound = ("R", "I", max_residuals)
    else:
        return None
    for dst in candidates:
        if p.load(dst, d) + c > p.cost(dst) + 1e-9:
            continue
        p.move(op, t, dst)
        span = range(min(t, dst), max(t, dst) + 1)
        ok = all(p.live(d, u, bound[0], bound[1]) <= bound[2] for u in span)
        p.move(op, dst, t)
        if ok:
            return dst
    return None


def fill_slack(program, stages: int, virtual_stages: int, cost_of, max_pending_w: int = MAX_PENDING_W,
               max_residuals: int = MAX_RESIDUALS):
    """zero_bubble_greedy's executed program (module docstring) from a 1F1B program (hoisted placement).

    `cost_of(op)` is the relative cost of an executed op. Returns program[t][d] = tuple of ops, in the
    order the executor runs them (backward kinds first, then F, then R; R before I of its microbatch)."""
    p = _Program(split_backward(program), stages, cost_of)
    last_stage = virtual_stages - 1
    stuck: set[int] = set()
    while True:
        todo = [t for t in range(len(p.slots)) if t not in stuck and p.cost(t) > 0]
        if not todo:
            break
        t = max(todo, key=lambda u: (p.cost(u), -u))
        top = p.cost(t)
        moves = []
        for d in range(p.stages):
            if p.load(t, d) < top - 1e-9:
                continue
            found = None
            for op in sorted(p.slots[t][d], key=lambda o: -cost_of(o)):
                dst = _place(p, op, t, max_pending_w, max_residuals, last_stage)
                if dst is not None:
                    found = (op, dst)
                    break
            if found is None:
                moves = None
                break
            p.move(found[0], t, found[1])
            moves.append(found)
        if moves is None or p.cost(t) >= top - 1e-9:  # could not make it cheaper: undo, leave it
            for op, dst in reversed(moves or []):
                p.move(op, dst, t)
            stuck.add(t)
    return _ordered(p.slots)


def _ordered(slots):
    """Executor order inside a slot: I (frees a residual set) and W first, then F, then R; an R whose I
    is in the same slot goes just before it."""
    rank = {BWD_INPUT: 1, BWD_WEIGHT: 1, "F": 2, RECOMPUTE: 3}
    out = []
    for row in slots:
        new_row = []
        for ops in row:
            ops = sorted(ops, key=lambda o: rank[o.kind])
            for r in [o for o in ops if o.kind == RECOMPUTE]:
                i = next((k for k, o in enumerate(ops) if o.kind == BWD_INPUT and o.microbatch == r.microbatch
                          and o.stage == r.stage), None)
                if i is not None:
                    ops.remove(r)
                    ops.insert(i, r)
            new_row.append(tuple(ops))
        out.append(tuple(new_row))
    return tuple(out)


def _packed(unit, cost_of, budget: float) -> tuple:
    """Each device runs its unit-table ops in order; a slot takes consecutive ready ops while its load
    stays within `budget` (always at least one). A neighbour's result is visible from the next slot;
    a device's own R -> I -> W may share a slot (they run in that order)."""
    pp, last = unit.stages, unit.virtual_stages - 1
    seq = [[row[d] for row in unit.slots if row[d] is not None] for d in range(pp)]
    done: dict[tuple[str, int, int], int] = {}
    prog, t = [], 0
    while any(seq):
        if t > 8 * len(unit.slots) + 8 * pp:  # cannot happen for a valid unit table; guards the loop
            raise RuntimeError(f"zero_bubble did not finish (stages={pp}, microbatches={unit.microbatches})")
        row = []
        for d in range(pp):
            ops, load = [], 0.0
            while seq[d]:
                op = seq[d][0]
                i, v = op.microbatch, op.stage
                sent = done.get(("F", i, v - 1), t) < t if v > 0 else True  # the stage input has arrived
                mine = {(o.kind, o.microbatch) for o in ops}
                if op.kind in ("F", RECOMPUTE):
                    ready = sent
                elif op.kind == BWD_INPUT:
                    ready = (((RECOMPUTE, i, v) in done or (RECOMPUTE, i) in mine)
                             and (v == last or done.get((BWD_INPUT, i, v + 1), t) < t))
                else:
                    ready = (BWD_INPUT, i, v) in done or (BWD_INPUT, i) in mine
                if not ready or (ops and load + cost_of(op) > budget + 1e-9):
                    break
                ops.append(seq[d].pop(0))
                load += cost_of(op)
            row.append(ops)
        for ops in row:
            for op in ops:
                done[(op.kind, op.microbatch, op.stage)] = t
        prog.append(row)
        t += 1
    return _ordered(prog)


def zb_h1(unit, cost_of) -> tuple:
    """ZB-H1's executed program (module docstring): the unit table's per-device order packed into
    lockstep slots, with the budget (one op's cost up to a steady-state microbatch's) that prices
    cheapest at `cost_of`."""
    kinds = {}
    for row in unit.slots:
        for op in row:
            if op is not None:
                kinds.setdefault(op.kind, []).append(cost_of(op))
    biggest = {k: max(c) for k, c in kinds.items()}
    one = max(biggest.values())
    budgets = sorted({one, biggest["F"] + biggest["R"], biggest["I"] + biggest["W"], 2 * one,
                      sum(biggest.values())})
    budgets = [b for b in budgets if b >= one]
    programs = [_packed(unit, cost_of, b) for b in budgets]
    price = [sum(max(sum(cost_of(op) for op in ops) for ops in row) for row in prog) for prog in programs]
    return programs[min(range(len(programs)), key=lambda k: (price[k], k))]
