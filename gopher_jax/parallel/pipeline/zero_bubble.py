"""zero_bubble's executed program: 1F1B's order, the backward split into I and W, W moved into slack.

ZB-H1 (Qi et al. 2023, section 3.1) is 1F1B whose backward is split into B (input gradient, on the
critical path) and W (weight gradient, which nothing waits for), with the W passes started later so
they fill the bubble, at 1F1B's activation memory. The executor (executor.py) runs lockstep slots whose
cost is the slowest device (cost.py), so "filling the bubble" means: put work where a device has slack,
i.e. where it would otherwise wait for a slower device. This module builds exactly that:

1. Start from 1F1B's executed program (schedule.py: F+R | V slots, recompute hoisted) and split each
   V into I + W (each B that could not be hoisted into R + I + W), in the same slot.
2. Repeatedly take the most expensive slot and try to make it cheaper: every device at its cost
   gives up one movable op -- a W to a later slot, an R (the recompute, not the last stage's) to an
   earlier one -- into a slot where that device's load plus the op stays within the slot's cost, so
   no other slot gets dearer. A move is kept only if every device at the maximum found a place.
3. Moves keep the memory bounds: at most `max_pending_w` microbatches between I and W per device (each
   holds its Dense inputs and output cotangents, deferred_wgrad.py) and at most `max_residuals`
   residual sets between R and I. I, F and the last stage's R never move, so every dependency of
   1F1B still holds; W only needs its own I, R only its stage input.

Op costs are relative (cost.OpCosts); the program is built with the analytic unit costs by default
so that it does not depend on the host (`Schedule.program`); cost.py then prices it with any costs.
"""
from __future__ import annotations

from gopher_jax.parallel.pipeline.schedule import BWD, BWD_INPUT, BWD_WEIGHT, RECOMPUTE, VJP, Op

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


def fill_slack(schedule, cost_of, max_pending_w: int = MAX_PENDING_W, max_residuals: int = MAX_RESIDUALS):
    """zero_bubble's executed program (module docstring) from a 1F1B schedule of the same shape.

    `cost_of(op)` is the relative cost of an executed op. Returns program[t][d] = tuple of ops, in the
    order the executor runs them (backward kinds first, then F, then R; R before I of its microbatch)."""
    p = _Program(split_backward(schedule.program), schedule.stages, cost_of)
    last_stage = schedule.virtual_stages - 1
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
