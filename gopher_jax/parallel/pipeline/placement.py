"""Placements: how a schedule's unit table (one F or B per device per slot) becomes the executed program
(a tuple of ops per device per lockstep slot; program.py lists the kinds).

The executor runs slots in lockstep, so a slot costs its slowest device (cost.py). A placement is good
when every steady-state slot costs the same on every device. Three placements:

  fused_backward  every B runs as one op (recompute + VJP) in its own slot; the last stage's forward is
                  skipped (its B recomputes it). gpipe, circular: their backward slots are backward on
                  every device, so they are uniform already.
  hoisted         one unit slot per unit-table slot; the recompute R of each backward moves into the
                  device's previous forward slot, so steady-state slots hold F+R or V. Uniform when
                  F + R = V: remat 'none' (F = R = 1, V = 2 forward units).
  paired          two unit slots in one: each slot runs the device's next forward *and* its next
                  backward (B = R + V fused) when they are ready, in the unit table's per-device order.
                  Every steady-state slot holds F + R + V on every device, so it is uniform whatever the
                  ratio of forward to backward cost: remat 'full' (V = 3) included. Hand-offs still take
                  one slot each way, so the in-flight stage inputs are 2 (P - d - 1) + 1 for 1F1B (twice
                  the unit table's P - d, stage inputs only) and the bubble is exactly Megatron's,
                  (P - 1) / (MB + P - 1) with T_B = T_R + 2 T_F (derivation: docs/decisions/0002-pipeline.md).

`schedule.make_schedule` chooses between hoisted and paired for 1f1b and interleaved_1f1b by pricing
both at the op costs it is given (cost.py), so the program follows the remat policy.
"""
from __future__ import annotations

from gopher_jax.parallel.pipeline.program import (BACKWARD_KINDS, BWD, FWD, RECOMPUTE, VJP, Lockstep, Op, Schedule,
                                                  slot_order)


def _ordered(prog) -> tuple:
    return tuple(tuple(slot_order(ops) for ops in row) for row in prog)


def fused_backward(s: Schedule) -> tuple:
    """The unit table as it stands, the last virtual stage's forward skipped (its B recomputes it)."""
    last = s.virtual_stages - 1
    return tuple(tuple(() if op is None or (op.kind == FWD and op.stage == last) else (op,) for op in row)
                 for row in s.slots)


def hoisted(s: Schedule) -> tuple:
    """Unit slots, each backward's recompute R hoisted into the device's latest earlier slot without
    backward work (after its stage input arrived); the last stage's forward is its R."""
    last = s.virtual_stages - 1
    prog = [[[] for _ in range(s.stages)] for _ in range(s.num_slots)]
    fwd_at = {(op.microbatch, op.stage): t for t, row in enumerate(s.slots) for op in row
              if op is not None and op.kind == FWD}
    for t, row in enumerate(s.slots):
        for d, op in enumerate(row):
            if op is None:
                continue
            i, v = op.microbatch, op.stage
            if op.kind == FWD:
                prog[t][d].append(Op(RECOMPUTE, i, v) if v == last else op)
            elif v == last:  # its residuals come from the R in its forward slot
                prog[t][d].append(Op(VJP, i, v))
            else:
                earliest = fwd_at[(i, v - 1)] + 1 if v > 0 else 0  # the stage input has arrived
                spot = next((u for u in range(t - 1, earliest - 1, -1)
                             if not any(o.kind in BACKWARD_KINDS or o.kind == RECOMPUTE for o in prog[u][d])), None)
                if spot is None:  # nowhere to put it: recompute and backward fused
                    prog[t][d].append(op)
                else:
                    prog[spot][d].append(Op(RECOMPUTE, i, v))
                    prog[t][d].append(Op(VJP, i, v))
    return _ordered(prog)


def paired(s: Schedule) -> tuple:
    """Each slot: the device's next forward and next backward (B = R + V) of the unit table's order, each
    run as soon as it is ready (a neighbour's result is visible from the next slot). The last virtual
    stage has no F: its B recomputes the forward."""
    last = s.virtual_stages - 1
    forwards = [[op for row in s.slots for op in [row[d]] if op is not None and op.kind == FWD and op.stage != last]
                for d in range(s.stages)]
    backwards = [[op for row in s.slots for op in [row[d]] if op is not None and op.kind == BWD]
                 for d in range(s.stages)]
    lock = Lockstep(f"paired placement of {s.name}", 4 * (s.num_slots + s.stages))
    while any(forwards) or any(backwards):
        row = []
        for d in range(s.stages):
            ops = []
            f = forwards[d][0] if forwards[d] else None
            if f is not None and (f.stage == 0 or lock.before(FWD, f.microbatch, f.stage - 1)):
                ops.append(forwards[d].pop(0))
            b = backwards[d][0] if backwards[d] else None
            if b is not None:
                i, v = b.microbatch, b.stage
                ready = (v == 0 or lock.before(FWD, i, v - 1)) if v == last else lock.before(BWD, i, v + 1)
                if ready:
                    ops.insert(0, backwards[d].pop(0))
            row.append(ops)
        lock.close(row)
    return tuple(lock.program)


PLACEMENTS = {"fused_backward": fused_backward, "hoisted": hoisted, "paired": paired}
