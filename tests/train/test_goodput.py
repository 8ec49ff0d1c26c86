"""Goodput bookkeeping with a fake clock: every second lands in exactly one phase."""
import pytest

from gopher_jax.train.goodput import PHASES, Goodput, format_table


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_each_second_is_booked_once():
    clock = Clock()
    g = Goodput(clock)
    clock.t = 3.0  # start-up: validation, data, init ...
    with g.phase("restore"):
        clock.t = 5.0  # ... of which 2 s restoring
    g.furthest_step = 1  # resumed at step 0 of a run that had reached step 1: step 1 is redone
    for step, (work, extra) in enumerate([(4.0, None), (1.0, None), (1.0, "eval"), (1.0, "checkpoint")], 1):
        g.step_started(step)
        clock.t += work
        if extra:
            with g.phase(extra):
                clock.t += 0.5
    g.finish()
    clock.t += 0.25  # after the loop: summary, plot
    b = g.breakdown()
    assert b["goodput/startup_s"] == 3.0 and b["goodput/restore_s"] == 2.0
    assert b["goodput/compile_s"] == 4.0  # the first step of the process, even though it is a redone one
    assert b["goodput/redone_s"] == 0.0 and b["goodput/productive_s"] == 3.0
    assert b["goodput/eval_s"] == 0.5 and b["goodput/checkpoint_s"] == 0.5 and b["goodput/other_s"] == 0.25
    assert b["wall_s"] == 13.25 == sum(b[f"goodput/{k}_s"] for k in (*PHASES, "other"))
    assert b["goodput"] == pytest.approx(3.0 / 13.25)
    table = format_table(b)
    assert "goodput 22.6% of 13.2 s wall" in table and "productive" in table


def test_steps_repeated_after_a_rewind_are_redone_not_productive():
    clock = Clock()
    g = Goodput(clock)
    for step in (1, 2, 3):
        g.step_started(step)
        clock.t += 1.0
    g.rewound(3)  # back to step 1: steps 2 and 3 will be trained again
    for step in (2, 3, 4):
        g.step_started(step)
        clock.t += 1.0
    g.finish()
    b = g.breakdown()
    assert (b["goodput/compile_s"], b["goodput/productive_s"], b["goodput/redone_s"]) == (1.0, 3.0, 2.0)
