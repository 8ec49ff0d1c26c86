"""Zero-bubble's second program builder: F, R and I in unit slots, W parts poured into what they leave.

zero_bubble._schedule gives every op a slot by list scheduling within a budget; at compiled op costs its
slots rarely level (a slot holding some device's I costs I, and I > F > W), so it ends ~3 points above
the bound. Here the big ops (F, R, I: each about one forward) decide the slots and W, split in `w_parts`
layer groups, is the filler that levels them. Each slot:

  1. every device takes at most one big op: its first ready one in `Rule.order` (I first keeps the
     critical path moving; "R*" is an R just in time, when the next device has run its own R of that
     microbatch, so its I is next), within the memory bounds zero_bubble.py states (stage inputs <=
     max_stash, residual sets <= max_residuals) and, with `Rule.ahead`, at most P - d + ahead
     microbatches past the device's I's once it has run one (a device that runs all its F's early has
     nothing but W's to fill the cool-down). With `Rule.tail_first`, once device 0 has run every F,
     the ready op with the longest chain of slots after it goes first (zero_bubble_fill.tail);
  2. a device keeps at most K = max_pending_w weight-gradient sets past the slot: the W parts of its
     oldest sets beyond K run now ("forced");
  3. the slot costs c = the dearest device's big op + forced W; with `Rule.lead`, the device with the
     most work left (the busiest stage sets the step: T = its work + its idle) pours W parts until
     it reaches c, and c rises to it;
  4. every other device adds ready big ops in `Rule.fill` order and then W parts while within c.

So a slot costs what its slowest device must run and the others top up towards it with W parts; in
the steady state the slots settle into a period of three (F, R, I each with a share of W), which levels
whenever W can be cut fine enough. zero_bubble.zb_h1 keeps whichever program, this or the list
scheduler's, prices cheapest (the 280B figures: docs/decisions/0002-pipeline.md).
"""
from __future__ import annotations

import dataclasses
from typing import Optional

from gopher_jax.parallel.pipeline.program import BWD_INPUT, BWD_WEIGHT, FWD, RECOMPUTE, Lockstep, Op

BIG = (FWD, RECOMPUTE, BWD_INPUT)


@dataclasses.dataclass(frozen=True)
class Rule:
    order: tuple  # big-op kinds in the order a device picks its one op ("R*": an R just in time)
    fill: tuple  # big-op kinds a device adds within the slot's cost
    lead: bool  # the device with the most work left pours W up to the slot's cost
    ahead: Optional[int]  # past its first I, device d runs F at most P - d + ahead microbatches ahead
    tail_first: bool  # once device 0 has run every F: the op with the longest chain after it first


def tail(op: Op, stages: int, microbatches: int) -> int:
    """Slots the chain after `op` needs at least: its I's hops to device 0, then device 0's I of every
    later microbatch (F: first its hops to the last device, whose R and I can share a slot)."""
    last, later = stages - 1, microbatches - 1 - op.microbatch
    return (last - op.stage) + last + later if op.kind == FWD else op.stage + later


def fill_program(stages: int, microbatches: int, cost_of, max_pending_w: int, max_residuals: int, w_parts: int,
                 max_stash: int, rule: Rule, per_slot: dict | None = None) -> tuple:
    """The executed program (program[t][d] = ops) built as the module docstring says, at `cost_of(op)`
    (a W part costs 1 / w_parts of W). `per_slot` {(t, d): Rule} overrides `rule` in slot t: for device d
    its order, fill, ahead and tail_first; with d = None, the slot's `lead` (zero_bubble_search.py)."""
    pp, mb, last, eps = stages, microbatches, stages - 1, 1e-9
    lock = Lockstep("zero_bubble fill", 8 * (mb + pp) * (4 + w_parts))
    nxt = [dict.fromkeys(BIG, 0) for _ in range(pp)]  # next microbatch per big kind (each runs in order)
    w_left = [[w_parts] * mb for _ in range(pp)]  # W parts not yet run, per microbatch
    queue = [[] for _ in range(pp)]  # (microbatch, part) of W ready to run, oldest first
    arrived = [0] * pp  # stage inputs received by the end of the previous slot
    part = [cost_of(Op(BWD_WEIGHT, 0, d)) for d in range(pp)]
    left = [sum(cost_of(Op(k, 0, d)) for k in BIG if not (k == FWD and d == last)) * mb + part[d] * w_parts * mb
            for d in range(pp)]  # work left per device

    per_slot, t = per_slot or {}, -1
    while any(queue[d] or nxt[d][BWD_INPUT] < mb for d in range(pp)):
        t += 1
        rules = [per_slot.get((t, d), rule) for d in range(pp)]
        lead = per_slot.get((t, None), rule).lead
        rows = [[] for _ in range(pp)]
        took = [dict.fromkeys(BIG, 0) for _ in range(pp)]
        load = [0.0] * pp

        def ready(d: int, kind: str):
            """Device d's next op of big `kind` if it may run in this slot (dependencies, memory bounds)."""
            just_in_time = kind.endswith("*")
            kind = kind.rstrip("*")
            if took[d][kind] or (kind == FWD and d == last) or nxt[d][kind] >= mb:
                return None
            i = nxt[d][kind]
            has_input = d == 0 or lock.before(FWD, i, d - 1)
            r_ran, i_ran = nxt[d][RECOMPUTE] + took[d][RECOMPUTE], nxt[d][BWD_INPUT] + took[d][BWD_INPUT]
            if kind == FWD:  # the next device keeps at most max_stash stage inputs (until their R)
                ok = has_input and arrived[d + 1] + 1 - nxt[d + 1][RECOMPUTE] <= max_stash
                done = nxt[d][BWD_INPUT]  # I's run before this slot
                ahead = rules[d].ahead
                ok = ok and (ahead is None or done == 0 or i - done < pp - d + ahead)
            elif kind == RECOMPUTE:  # after the device's own F; one residual set per max_residuals
                ok = has_input and (d == last or nxt[d][FWD] + took[d][FWD] > i) and r_ran + 1 - i_ran <= max_residuals
                ok = ok and (not just_in_time or d == last or lock.ran(RECOMPUTE, i, d + 1))
            else:  # after its R and the next device's I
                ok = r_ran > i and (d == last or lock.before(BWD_INPUT, i, d + 1))
            return Op(kind, i, d) if ok else None

        def take(d: int, op: Op) -> None:
            rows[d].append(op)
            load[d] += cost_of(op)
            took[d][op.kind] += 1

        def forced(d: int) -> int:
            """W parts device d must run in this slot to keep at most max_pending_w sets past it."""
            done = nxt[d][BWD_INPUT] + took[d][BWD_INPUT]
            open_sets = [m for m in range(done) if w_left[d][m]]
            return sum(w_left[d][m] for m in open_sets[:max(0, len(open_sets) - max_pending_w)])

        cool_down = nxt[0][FWD] == mb
        for d in range(pp):
            ops = [op for op in (ready(d, k) for k in rules[d].order) if op is not None]
            if rules[d].tail_first and cool_down:  # stable: ties keep the rule's order
                ops.sort(key=lambda op: -tail(op, pp, mb))
            if ops:
                take(d, ops[0])
        c = max(load[d] + forced(d) * part[d] for d in range(pp))
        for d in range(pp):
            for kind in rules[d].fill:
                op = ready(d, kind)
                if op is not None and load[d] + forced(d) * part[d] + cost_of(op) <= c + eps:
                    take(d, op)
            queue[d].extend((op.microbatch, k) for op in rows[d] if op.kind == BWD_INPUT for k in range(w_parts))
        only_w = all(nxt[e][BWD_INPUT] + took[e][BWD_INPUT] == mb for e in range(pp))  # the rest: all of it
        devices = list(range(pp))
        if lead:  # the device with the most work left pours first and never stops below c
            first = max(devices, key=lambda d: (left[d], -d))
            devices = [first] + [d for d in devices if d != first]
        for d in devices:
            n, must = 0, forced(d)
            while queue[d] and (n < must or only_w or load[d] + part[d] <= c + eps or
                                (lead and d == devices[0] and load[d] < c - eps)):
                m, k = queue[d].pop(0)
                rows[d].append(Op(BWD_WEIGHT, m, d, k))
                load[d] += part[d]
                w_left[d][m] -= 1
                n += 1
            c = max(c, load[d])
        if not any(rows):  # nothing could run: the memory bounds are too tight to make progress
            raise RuntimeError(f"zero_bubble fill stuck (stages={pp}, microbatches={mb}, {rule})")
        lock.close(rows)
        for d in range(pp):
            left[d] -= load[d]
            for kind in BIG:
                nxt[d][kind] += took[d][kind]
            if d + 1 < pp:
                arrived[d + 1] += took[d][FWD]
    return tuple(lock.program)
