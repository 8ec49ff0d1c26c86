"""Schedule tables: dependencies hold, every op runs once, and the idle slots are exactly the bubble
formulas: (PP-1)/(MB+PP-1) for GPipe and 1F1B, (PP-1)/(R*MB+PP-1) for circular."""
from fractions import Fraction

import pytest

from gopher_jax.parallel.pipeline.executor import compile_program
from gopher_jax.parallel.pipeline.schedule import FWD, expected_bubble, make_schedule

GRID = [(s, pp, mb, r) for pp in (2, 4, 8) for mb in (8, 16, 32) for s, r in
        (("gpipe", 1), ("1f1b", 1), ("circular", 2), ("circular", 4))]


def _times(s):
    fwd, bwd = {}, {}
    for t, row in enumerate(s.slots):
        for d, op in enumerate(row):
            if op is not None:
                assert op.stage % s.stages == d  # a virtual stage runs on its own device
                key = (op.microbatch, op.stage)
                table = fwd if op.kind == FWD else bwd
                assert key not in table  # each op exactly once
                table[key] = t
    return fwd, bwd


@pytest.mark.parametrize("name, pp, mb, r", GRID)
def test_idle_slots_are_exactly_the_bubble_formula(name, pp, mb, r):
    s = make_schedule(name, pp, mb, r)
    fwd, bwd = _times(s)
    v = pp * r
    assert len(fwd) == len(bwd) == mb * v
    for (i, k), t in fwd.items():  # F after the previous stage's F; B after the next stage's B (or own F)
        assert k == 0 or fwd[(i, k - 1)] < t
        assert bwd[(i, k)] > (fwd[(i, k)] if k == v - 1 else bwd[(i, k + 1)])
    # Busy slots per device: R*MB forwards + R*MB backwards; idle = 2 (PP - 1) per device.
    assert s.num_slots == 2 * (r * mb + pp - 1)
    assert s.idle_slots() == 2 * (pp - 1) * pp
    assert Fraction(s.idle_slots(), s.num_slots * pp) == Fraction(pp - 1, r * mb + pp - 1)
    assert s.bubble() == pytest.approx(expected_bubble(name, pp, mb, r), abs=1e-12)


@pytest.mark.parametrize("pp, mb", [(2, 8), (4, 8), (4, 16), (8, 8), (8, 32)])
def test_1f1b_bounds_activations_by_stages_gpipe_by_microbatches(pp, mb):
    one_f, gpipe = make_schedule("1f1b", pp, mb), make_schedule("gpipe", pp, mb)
    assert [one_f.max_in_flight(d) for d in range(pp)] == [pp - d for d in range(pp)]
    assert [gpipe.max_in_flight(d) for d in range(pp)] == [mb] * pp
    # ... and the executor's stash of stage inputs is sized accordingly.
    assert compile_program(one_f).act_slots <= pp
    assert compile_program(gpipe).act_slots == mb


def test_circular_bubble_shrinks_by_the_repeats():
    pp, mb = 4, 8
    base = make_schedule("gpipe", pp, mb).bubble()
    assert make_schedule("circular", pp, mb, 2).bubble() < base
    assert expected_bubble("circular", pp, mb, 4) == pytest.approx((pp - 1) / (4 * mb + pp - 1))


def test_table_chart_is_readable():
    chart = make_schedule("1f1b", 4, 6).table()
    print(chart)
    last = chart.splitlines()[3].split(": ")[1].split()
    assert last[:9] == [".", ".", ".", "F0", "B0", "F1", "B1", "F2", "B2"]  # warm-up wait, then 1F1B
    assert chart.splitlines()[0].split(": ")[1].split()[:4] == ["F0", "F1", "F2", "F3"]
