"""Pipeline schedules as pure-Python tables: for every time slot and device, which microbatch runs
its forward (F) or backward (B) through which virtual stage, or nothing (idle).

Time is counted in slots of one stage-forward or one stage-backward (the usual unit-cost model:
a stage's backward is charged one slot like its forward). The executor (`executor.py`) runs exactly
these tables in lockstep, so the bubble counted here is the bubble the step has.

Virtual stages: the model's layers are cut into `stages * repeats` contiguous groups; group v runs on
device v % stages. repeats = 1 for `gpipe` and `1f1b`; `circular` uses repeats > 1, so each device
holds `repeats` non-contiguous groups and a microbatch circles the ring `repeats` times.

  gpipe     all forwards, then all backwards (GPipe, Huang et al. 2019).
  1f1b      warm-up forwards, then one-forward-one-backward, then cool-down backwards
            (PipeDream-Flush; Megatron/MT-NLG): at most `stages - d` microbatches in flight on device d.
  circular  GPipe order over `stages * repeats` virtual stages (MaxText/Praxis "circular"); the
            bubble shrinks by the number of repeats.

Bubble (idle slots / all slots, per device; all devices are equal):
  gpipe, 1f1b:  (PP - 1) / (MB + PP - 1)          -> efficiency MB / (MB + PP - 1)
  circular:     (PP - 1) / (R * MB + PP - 1)      -> efficiency R*MB / (R*MB + PP - 1)
`tests/parallel/test_pipeline_schedule.py` asserts these counts exactly from the tables.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

SCHEDULES = ("gpipe", "1f1b", "circular")
IDLE, FWD, BWD = 0, 1, 2


@dataclasses.dataclass(frozen=True)
class Op:
    kind: int  # FWD or BWD
    microbatch: int
    stage: int  # virtual stage (0 .. stages*repeats - 1); runs on device stage % stages


@dataclasses.dataclass(frozen=True)
class Schedule:
    """slots[t][d] is the Op device d runs in time slot t, or None when it idles."""

    name: str
    stages: int  # devices on the pipeline axis
    repeats: int
    microbatches: int
    slots: tuple[tuple[Optional[Op], ...], ...]

    @property
    def num_slots(self) -> int:
        return len(self.slots)

    @property
    def virtual_stages(self) -> int:
        return self.stages * self.repeats

    def idle_slots(self) -> int:
        """Idle (device, slot) pairs over the whole step."""
        return sum(op is None for row in self.slots for op in row)

    def bubble(self) -> float:
        """Idle fraction of all (device, slot) pairs."""
        return self.idle_slots() / (self.num_slots * self.stages)

    def max_in_flight(self, device: int) -> int:
        """Most microbatches whose forward ran on `device` but whose backward has not (activations alive)."""
        live = peak = 0
        for row in self.slots:
            op = row[device]
            if op is not None:
                live += 1 if op.kind == FWD else -1
                peak = max(peak, live)
        return peak

    def table(self) -> str:
        """A readable chart: one row per device, `F3`/`B3` = forward/backward of microbatch 3, `.` = idle."""
        def cell(op):
            if op is None:
                return " ."
            r = f"r{op.stage // self.stages}" if self.repeats > 1 else ""
            return ("F" if op.kind == FWD else "B") + str(op.microbatch) + r

        width = max(len(cell(op)) for row in self.slots for op in row)
        return "\n".join(f"dev{d}: " + " ".join(cell(row[d]).rjust(width) for row in self.slots)
                         for d in range(self.stages))


def expected_bubble(name: str, stages: int, microbatches: int, repeats: int = 1) -> float:
    """The closed-form bubble the tables reproduce exactly: (PP-1)/(R*MB + PP-1)."""
    r = repeats if name == "circular" else 1
    return (stages - 1) / (r * microbatches + stages - 1)


def check(name: str, stages: int, microbatches: int, repeats: int = 1, num_layers: int | None = None) -> None:
    """Raises ValueError naming the value and the fix when a schedule cannot run."""
    if name not in SCHEDULES:
        raise ValueError(f"pipeline.schedule={name!r} is not one of {SCHEDULES}")
    if stages < 1 or microbatches < 1 or repeats < 1:
        raise ValueError(f"pipeline stages={stages}, microbatches={microbatches}, repeats={repeats} must be >= 1")
    if name != "circular" and repeats != 1:
        raise ValueError(f"pipeline.repeats={repeats} only applies to pipeline.schedule='circular' "
                         f"(got {name!r}); set pipeline.repeats=1 or pipeline.schedule='circular'")
    if name == "circular" and repeats < 2:
        raise ValueError(f"pipeline.schedule='circular' needs pipeline.repeats >= 2 (got {repeats}); "
                         f"with one repeat use pipeline.schedule='gpipe'")
    if name in ("1f1b", "circular") and microbatches < stages:
        raise ValueError(f"pipeline.schedule={name!r} needs at least as many microbatches as stages: "
                         f"microbatches={microbatches} < MeshConfig.pipeline={stages}; use train.microbatches "
                         f">= {stages} (4 x stages keeps the bubble under 20%)")
    if num_layers is not None and num_layers % (stages * repeats):
        ok = [s for s in range(1, num_layers + 1) if num_layers % (s * repeats) == 0]
        raise ValueError(f"ModelConfig.num_layers={num_layers} does not split into MeshConfig.pipeline={stages}"
                         f" x pipeline.repeats={repeats} = {stages * repeats} equal stages; use "
                         f"MeshConfig.pipeline in {ok} or ModelConfig.num_layers a multiple of {stages * repeats}")


def make_schedule(name: str, stages: int, microbatches: int, repeats: int = 1) -> Schedule:
    """Returns the table of a schedule by simulating it in lockstep (one op per device per slot).

    An op's result reaches the neighbouring device for the next slot. Each device picks, among its
    ready ops: `gpipe`/`circular` a forward if any (lowest virtual stage, then microbatch), else a
    backward (highest virtual stage, then microbatch); `1f1b` a backward if any is ready, else a
    forward while fewer than `stages - d` microbatches are in flight on device d.
    """
    check(name, stages, microbatches, repeats)
    pp, mb = stages, microbatches
    v_total = pp * repeats
    fwd_done: dict[tuple[int, int], int] = {}  # (microbatch, virtual stage) -> slot it ran in
    bwd_done: dict[tuple[int, int], int] = {}
    in_flight = [0] * pp
    slots = []
    total_ops = 2 * mb * v_total
    t = 0
    while len(fwd_done) + len(bwd_done) < total_ops:
        if t > 4 * total_ops + 4 * pp:  # cannot happen for valid inputs; guards the loop
            raise RuntimeError(f"schedule {name} did not finish (stages={pp}, microbatches={mb})")
        row = []
        for d in range(pp):
            my_stages = [v for v in range(v_total) if v % pp == d]
            fwd_ready = [(v, i) for v in my_stages for i in range(mb)
                         if (i, v) not in fwd_done and (v == 0 or fwd_done.get((i, v - 1), t) < t)]
            bwd_ready = [(v, i) for v in my_stages for i in range(mb)
                         if (i, v) not in bwd_done and (
                             fwd_done.get((i, v), t) < t if v == v_total - 1 else bwd_done.get((i, v + 1), t) < t)]
            op = None
            if name == "1f1b":
                if bwd_ready:
                    v, i = min(bwd_ready, key=lambda x: x[1])
                    op = Op(BWD, i, v)
                elif fwd_ready and in_flight[d] < pp - d:
                    v, i = min(fwd_ready, key=lambda x: x[1])
                    op = Op(FWD, i, v)
            else:
                if fwd_ready:
                    v, i = min(fwd_ready)
                    op = Op(FWD, i, v)
                elif bwd_ready:
                    v, i = min(bwd_ready, key=lambda x: (-x[0], x[1]))
                    op = Op(BWD, i, v)
            row.append(op)
        for d, op in enumerate(row):  # commit after every device chose: results are seen next slot
            if op is not None:
                (fwd_done if op.kind == FWD else bwd_done)[(op.microbatch, op.stage)] = t
                in_flight[d] += 1 if op.kind == FWD else -1
        slots.append(tuple(row))
        t += 1
    return Schedule(name, pp, repeats, mb, tuple(slots))
