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
    part: int = 0  # W of a zero-bubble program split in `Schedule.w_parts` layer groups: which one


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
    w_parts: int = 1  # zero_bubble: each W runs as this many ops over equal groups of the stage's layers

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


def op_cost(schedule: Schedule, costs, op: Op) -> float:
    """An executed op's cost: costs(kind, position); a W split in `w_parts` layer groups costs its share."""
    c = costs(op.kind, position(schedule, op.stage))
    return c / schedule.w_parts if op.kind == BWD_WEIGHT else c


def position(schedule: Schedule, stage: int) -> str:
    """'first' | 'mid' | 'last': which branch a virtual stage runs (embedding / layers / head + loss)."""
    return "first" if stage == 0 else "last" if stage == schedule.virtual_stages - 1 else "mid"



class Lockstep:
    """An executed program built slot by slot, with the dependency rule every placement shares: a
    device's result is visible to its neighbours from the next slot (the ring ppermute at the end of the
    slot) and to itself within the slot (its ops run in `slot_order`)."""

    def __init__(self, name: str, limit: int):
        self.name, self.limit = name, limit
        self.done: dict[tuple[str, int, int], int] = {}  # (kind, microbatch, virtual stage) -> slot
        self.program: list = []

    @property
    def t(self) -> int:
        return len(self.program)

    def before(self, kind: str, microbatch: int, stage: int) -> bool:
        """Did (kind, microbatch, stage) run in an earlier slot (so a neighbour can read it now)?"""
        return self.done.get((kind, microbatch, stage), self.t) < self.t

    def ran(self, kind: str, microbatch: int, stage: int) -> bool:
        return (kind, microbatch, stage) in self.done

    def close(self, row) -> None:
        """Appends slot `row` (per device, a list of ops) to the program: the one slot-closing step."""
        if self.t > self.limit:  # cannot be reached for valid inputs; guards the loop
            raise RuntimeError(f"{self.name} did not finish in {self.limit} slots")
        for ops in row:
            for op in ops:
                self.done[(op.kind, op.microbatch, op.stage)] = self.t
        self.program.append(tuple(slot_order([op for op in ops if op is not None]) for ops in row))


def slot_order(ops) -> tuple:
    """A slot's ops in the order the executor runs them (executor._check_slot relies on it): weight
    gradients of earlier microbatches first, then the recompute R of the slot's backward microbatch, the
    backward (B, V or I), that microbatch's W, the forward F, and last an R of another microbatch (it
    fills a buffer for a later slot). A set an op hands to a later op of the same slot (R -> V / I,
    I -> W) never touches a buffer."""
    back = next((op for op in ops if op.kind in ("B", "V", "I")), None)

    def rank(op):
        mine = back is not None and (op.microbatch, op.stage) == (back.microbatch, back.stage)
        if op.kind == BWD_WEIGHT:
            return 3 if mine else 0
        if op.kind == RECOMPUTE:
            return 1 if mine and back.kind != BWD else 5
        return 2 if op is back else 4

    return tuple(sorted(ops, key=rank))
