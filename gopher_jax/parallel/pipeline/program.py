"""The program representation every pipeline module shares: ops, a schedule's unit table, its executed
program, and the stage position of a virtual stage.

schedule.py builds `Schedule`s (unit tables and, through a placement, executed programs); cost.py
prices them; zero_bubble.py places zero-bubble's ops; executor.py runs them. All of them import this
module and none imports another's internals, so there is no import circle.

Op kinds. Unit table: F (stage forward), B (stage backward), and for zero-bubble I (input gradient) and
W (weight gradient). Executed program, per device per lockstep slot, a tuple of:
  F  stage forward, result sent to the next stage     R  forward that keeps the VJP residuals
  V  backward from kept residuals (dx and dW)          B  R and V fused (recompute + backward)
  I  backward from kept residuals, dx only             W  backward from kept residuals, dW only
"""
from __future__ import annotations

import dataclasses
from typing import Optional

FWD, BWD, BWD_INPUT, BWD_WEIGHT = "F", "B", "I", "W"  # unit-table kinds
RECOMPUTE, VJP = "R", "V"  # executed-only kinds
BACKWARD_KINDS = ("B", "V", "I", "W")
POSITIONS = ("first", "mid", "last")


@dataclasses.dataclass(frozen=True)
class Op:
    kind: str  # F, B, I, W (unit table); F, R, V, B, I, W (executed program)
    microbatch: int
    stage: int  # virtual stage (0 .. stages*repeats - 1); runs on device stage % stages


Program = tuple  # program[t][d] = tuple of Ops device d runs in slot t, in order


@dataclasses.dataclass(frozen=True)
class Schedule:
    """slots[t][d] is the unit Op device d runs in time slot t, or None when it idles; program[t][d] is
    the tuple of ops the executor runs there (schedule.py's module docstring says how it is placed)."""

    name: str
    stages: int  # devices on the pipeline axis
    repeats: int
    microbatches: int
    slots: tuple[tuple[Optional[Op], ...], ...]
    program: Program = dataclasses.field(compare=False, repr=False, default=())
    placement: str = ""  # how `program` was placed from the unit table (schedule.PLACEMENTS)

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
        """Most microbatches whose forward ran on `device` but whose backward (W for zero-bubble) has
        not, in the unit table."""
        live = peak = 0
        split = self.name.startswith("zero_bubble")
        start = (FWD, RECOMPUTE) if device == self.stages - 1 and split else (FWD,)
        end = BWD_WEIGHT if split else BWD
        for row in self.slots:
            op = row[device]
            if op is not None and (op.kind in start or op.kind == end):
                live += 1 if op.kind in start else -1
                peak = max(peak, live)
        return peak

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


def position(schedule: Schedule, stage: int) -> str:
    """'first' | 'mid' | 'last': which branch a virtual stage runs (embedding / layers / head + loss)."""
    return "first" if stage == 0 else "last" if stage == schedule.virtual_stages - 1 else "mid"

