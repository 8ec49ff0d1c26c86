"""The TensorFlow-free TensorBoard writer writes files TensorBoard itself reads back exactly."""
import subprocess
import sys


def test_tensorboard_reads_our_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from gopher_jax.train.tb_events import summary_writer

    w = summary_writer(str(tmp_path / "tb"))
    for step, loss in [(1, 5.25), (2, 4.5), (10, 3.125)]:
        w.scalar("loss", loss, step)
    w.scalar("eval_bits_per_byte/books", 1.75, 10)
    w.flush()
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert sorted(acc.Tags()["scalars"]) == ["eval_bits_per_byte/books", "loss"]
    assert [(e.step, e.value) for e in acc.Scalars("loss")] == [(1, 5.25), (2, 4.5), (10, 3.125)]
    assert [(e.step, e.value) for e in acc.Scalars("eval_bits_per_byte/books")] == [(10, 1.75)]


def test_writing_imports_no_tensorflow(tmp_path):
    code = ("import sys; from gopher_jax.train.metrics_log import MetricsLog; "
            f"m = MetricsLog({str(tmp_path)!r}); m.write({{'step': 1, 'loss': 2.0}}); "
            "print('tensorflow' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
