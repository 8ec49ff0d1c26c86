"""Executed-cost model of a pipeline schedule: what the lockstep program really costs.

The executor (executor.py) runs `Schedule.program` slot by slot in lockstep: every device waits for
its neighbours' ppermutes at the end of each slot, so

    slot cost   = the most expensive op list any device runs in that slot
    efficiency  = reference work of the busiest device / sum of slot costs

The reference work is what one device would run for its stages without a pipeline: per microbatch
and virtual stage, a forward plus a backward that recomputes it (F + B; the last stage's forward is
its backward's recompute, so it counts B only). A schedule that splits or moves work pays for any
extra work it adds (zero-bubble's I + W against B) as a lower efficiency. `step time = reference
time / efficiency`, which is how `gopher-jax plan` predicts the pipelined step.

Op costs per (executed kind, stage position) come from `measured_costs` (compile each branch on
one device and read XLA's cost analysis: FLOPs) or, when compiling is unavailable, from
`analytic_costs`: F = R = 1, V = 2 backward units (3 with remat_policy='full', which recomputes each
layer once more inside the backward), B = R + V, I = W = V / 2 (the ZB paper's even split), and the
first/last stage's embedding/head are ignored.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping

from gopher_jax.parallel.pipeline.schedule import BWD, FWD, Schedule

POSITIONS = ("first", "mid", "last")
KINDS = ("F", "R", "V", "B", "I", "W")


@dataclasses.dataclass(frozen=True)
class OpCosts:
    """cost[(kind, position)] in any unit (FLOPs when measured); `source` says where they came from."""

    cost: Mapping[tuple[str, str], float]
    source: str  # "compiled" | "analytic"

    def __call__(self, kind: str, position: str) -> float:
        return self.cost[(kind, position)]


def analytic_costs(remat_policy: str = "none") -> OpCosts:
    """The unit-cost fallback: F = R = 1, V = 2 (3 with remat 'full'), B = R + V, I = W = V / 2."""
    v = 3.0 if remat_policy == "full" else 2.0
    one = {"F": 1.0, "R": 1.0, "V": v, "B": 1.0 + v, "I": v / 2, "W": v / 2}
    cost = {(k, p): c for k, c in one.items() for p in POSITIONS}
    cost[("F", "last")] = 0.0  # the executor folds the last stage's forward into its R / B
    return OpCosts(cost, "analytic")


def position(schedule: Schedule, stage: int) -> str:
    return "first" if stage == 0 else "last" if stage == schedule.virtual_stages - 1 else "mid"


def slot_costs(schedule: Schedule, costs: OpCosts, program=None) -> list[float]:
    """Cost of every slot of the executed program: max over devices of the sum of its ops' costs."""
    program = schedule.program if program is None else program
    return [max(sum(costs(op.kind, position(schedule, op.stage)) for op in ops) for ops in row)
            for row in program]


def reference_work(schedule: Schedule, costs: OpCosts) -> float:
    """Busiest device's unpipelined work: microbatches x its stages' (F + B) (last stage: B)."""
    per_device = [0.0] * schedule.stages
    for v in range(schedule.virtual_stages):
        pos = position(schedule, v)
        per_device[v % schedule.stages] += schedule.microbatches * (costs("F", pos) + costs("B", pos))
    return max(per_device)


def executed_efficiency(schedule: Schedule, costs: OpCosts, program=None) -> float:
    """Reference work of the busiest device / sum of slot costs (module docstring); 1 = no bubble."""
    return reference_work(schedule, costs) / sum(slot_costs(schedule, costs, program))


def fused_program(schedule: Schedule):
    """The program of the previous executor (before hoisting), kept to report the change: one op per
    device per slot, every backward a fused B (recompute + VJP), the last stage's forward skipped."""
    last = schedule.virtual_stages - 1
    assert all(op.kind in (FWD, BWD) for row in schedule.slots for op in row if op is not None)
    return tuple(tuple(() if op is None or (op.kind == FWD and op.stage == last) else (op,) for op in row)
                 for row in schedule.slots)
