"""Executed-cost model of a pipeline schedule: what the lockstep program really costs.

The executor (executor.py) runs `Schedule.program` slot by slot in lockstep: every device waits for
its neighbours' ppermutes at the end of each slot, so

    slot cost   = the most expensive op list any device runs in that slot
    efficiency  = reference work of the busiest device / sum of slot costs

The reference work is the work the pipelined step runs by design, per microbatch and virtual stage:
F + R + V = F + B (forward, the backward's stage recompute, the VJP; the last stage's forward *is*
its R, so it counts B only). The recompute R is part of it: `plan` multiplies the unpipelined step
by (F + R + V) / (F + V) for it (plan/throughput.py) and divides by this efficiency for the bubble.
A program that runs more than that work (a V that re-ran the forward, zero-bubble's I + W above V)
shows as a lower efficiency; `tests/parallel/test_pipeline_memory.py` checks, from the
compiled executor's own branches, that what runs is what the program says.

Op costs per (executed kind, stage position) come from `measured_costs` (compile each branch on
one device and read XLA's cost analysis: FLOPs) or, when compiling is unavailable, from
`analytic_costs`: F = R = 1, V = 2 backward units (3 with remat_policy='full', which recomputes each
layer once more inside the backward), B = R + V, W = 1 and I = V - W (the ZB paper's even split for
remat 'none'), and the
first/last stage's embedding/head are ignored.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping

from gopher_jax.parallel.pipeline.program import POSITIONS, Schedule, op_cost, position

KINDS = ("F", "R", "V", "B", "I", "W")


@dataclasses.dataclass(frozen=True)
class OpCosts:
    """cost[(kind, position)] in any unit (FLOPs when measured); `source` says where they came from."""

    cost: Mapping[tuple[str, str], float]
    source: str  # "compiled" | "analytic"

    def __call__(self, kind: str, position: str) -> float:
        return self.cost[(kind, position)]


def analytic_costs(remat_policy: str = "none") -> OpCosts:
    """The unit-cost fallback: F = R = 1, V = 2 (3 with remat 'full'), B = R + V, W = 1 (x^T dy costs
    the forward's matmuls), I = V - W (so remat 'full''s in-layer recompute is in I)."""
    v = 3.0 if remat_policy == "full" else 2.0
    one = {"F": 1.0, "R": 1.0, "V": v, "B": 1.0 + v, "I": v - 1.0, "W": 1.0}
    cost = {(k, p): c for k, c in one.items() for p in POSITIONS}
    cost[("F", "last")] = 0.0  # the executor folds the last stage's forward into its R / B
    return OpCosts(cost, "analytic")


def slot_costs(schedule: Schedule, costs: OpCosts, program=None) -> list[float]:
    """Cost of every slot of the executed program: max over devices of the sum of its ops' costs."""
    program = schedule.program if program is None else program
    return [max(sum(op_cost(schedule, costs, op) for op in ops) for ops in row) for row in program]


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

