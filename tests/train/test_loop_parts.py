"""The training loop's parts, each without a subprocess or a model: cadence, throughput window,
spike policy, preemption handling and the held-out metric definitions."""
import math

import pytest

from gopher_jax.train import spike_monitor
from gopher_jax.train.cadence import Cadence
from gopher_jax.train.evaluation import mixture_metrics
from gopher_jax.train.preemption import stop_for_preemption
from gopher_jax.train.signals import EXIT_PREEMPTED, Preempted
from gopher_jax.train.throughput_window import ThroughputWindow


def test_cadence_logs_evaluates_and_checkpoints_on_schedule_and_at_the_end():
    c = Cadence(steps=10, log_every=3, eval_every=4, checkpoint_every=5)
    assert [s for s in range(1, 11) if c.logs(s)] == [3, 6, 9, 10]
    assert [s for s in range(1, 11) if c.evaluates(s)] == [4, 8, 10]
    assert [s for s in range(1, 11) if c.checkpoints(s)] == [5, 10]
    assert [s for s in range(1, 11) if Cadence(10, 3, 0, 5).evaluates(s)] == [10]  # eval_every=0: end only


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_throughput_leaves_out_the_compile_step_and_evaluation_time():
    clock = FakeClock()
    w = ThroughputWindow(tokens_per_step=100, clock=clock)
    blocked = []
    clock.t = 30.0  # the first step compiles for 30 s
    w.step_done(0.0, lambda: blocked.append(True))
    assert blocked and w.compile_s == 30.0 and w.tokens_per_s() == 0.0
    for _ in range(4):  # 4 steps of 0.5 s
        t0 = clock.t
        clock.t += 0.5
        w.step_done(t0, lambda: None)
    with w.excluded():
        clock.t += 100.0  # an evaluation
    assert w.tokens_per_s() == pytest.approx(4 * 100 / 2.0)
    w.restart()
    assert w.tokens_per_s() == 0.0


def test_skip_policy_reports_new_drops_and_stops_past_the_limit():
    m = spike_monitor.SpikeMonitor("skip", max_skipped_updates=2, max_rewinds=3)
    assert m.observe(5, 0).action == spike_monitor.NONE
    d = m.observe(10, 1)
    assert d.action == spike_monitor.SKIPPED and not d.stop_reason and "1 update(s) dropped" in d.message
    assert m.observe(15, 1).action == spike_monitor.NONE  # already reported
    d = m.observe(20, 3)
    assert d.action == spike_monitor.SKIPPED and "2 update(s) dropped (non-finite or spiking loss), 3 in total" in d.message
    assert "train.max_skipped_updates=2" in d.stop_reason


def test_rewind_policy_counts_rewinds_and_stops_past_the_limit():
    m = spike_monitor.SpikeMonitor("rewind", max_skipped_updates=99, max_rewinds=2)
    assert m.should_look(4, log_every=2, is_checkpoint=False, stop_requested=False)
    assert not m.should_look(3, log_every=2, is_checkpoint=False, stop_requested=False)
    assert m.should_look(3, log_every=2, is_checkpoint=False, stop_requested=True)
    d = m.observe(4, 1)
    assert d.action == spike_monitor.REWIND and d.rewinds == 1
    m.rewound(0)  # the restored state's guard count
    assert m.observe(5, 1).action == spike_monitor.REWIND
    m.rewound(0)
    d = m.observe(6, 1)
    assert d.action == spike_monitor.DIVERGED and "train.max_rewinds=2" in d.message and d.rewinds == 3
    assert "rewind 2 of at most 2" in spike_monitor.SpikeMonitor("rewind", 0, 2, rewinds=2).rewind_message(9, 4, 5, 9)
    assert not spike_monitor.SpikeMonitor("none", 0, 0).should_look(4, 2, True, True)


class FakeCheckpointer:
    directory = "/run/checkpoints"

    def __init__(self, events):
        self.events = events

    def close(self):
        self.events.append("close")

    def step_dir(self, step):
        return f"{self.directory}/{step}"


class FakeLog:
    def __init__(self, events):
        self.events = events

    def write(self, record):
        self.events.append(record)


@pytest.mark.parametrize("already_saved", [False, True])
def test_preemption_saves_unless_saved_waits_then_exits_75(already_saved, capsys):
    events = []
    with pytest.raises(Preempted) as e:
        stop_for_preemption(7, "SIGTERM", FakeCheckpointer(events), FakeLog(events),
                            save=lambda: events.append("save"), already_saved=already_saved)
    assert e.value.code == EXIT_PREEMPTED
    want = ([] if already_saved else ["save"]) + ["close", {"step": 7, "event": "preempted", "signal": "SIGTERM"}]
    assert events == want  # the checkpoint is written and waited for before the event is logged
    assert "/run/checkpoints/7 is on disk" in capsys.readouterr().err


def test_mixture_metrics_follow_their_definitions():
    # component: (summed loss in nats, tokens, bytes)
    per = {"a": (200.0, 100.0, 400), "b": (90.0, 30.0, 60)}
    got = mixture_metrics(per, {"a": 0.75, "b": 0.25, "c": 0.5})  # c was not evaluated: renormalised away
    assert got["eval_loss/a"] == pytest.approx(2.0) and got["eval_loss/b"] == pytest.approx(3.0)
    assert got["eval_bits_per_byte/a"] == pytest.approx(200 / math.log(2) / 400)
    assert got["eval_bits_per_byte/b"] == pytest.approx(90 / math.log(2) / 60)
    assert got["eval_loss"] == pytest.approx(0.75 * 2.0 + 0.25 * 3.0)
    # expected bits per token / expected bytes per token at the weights
    bits = (0.75 * 2.0 + 0.25 * 3.0) / math.log(2)
    byte = 0.75 * 4.0 + 0.25 * 2.0
    assert got["eval_bits_per_byte"] == pytest.approx(bits / byte)
