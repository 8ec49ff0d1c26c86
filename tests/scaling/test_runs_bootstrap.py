"""The runs table (CSV, metrics.jsonl) and the bootstrap helpers."""
import json

import numpy as np
import pytest

from gopher_jax.scaling.bootstrap import bootstrap, percentile_intervals, resample
from gopher_jax.scaling.runs import final_eval_loss, make_runs, read_csv, read_metrics, write_csv


def test_csv_round_trip(tmp_path):
    runs = make_runs([1e6, 2e6], [1e9, 2e9], [3.0, 2.5], step=[10, 20], run=["a", "b"])
    write_csv(runs, str(tmp_path / "r.csv"))
    back = read_csv(str(tmp_path / "r.csv"))
    np.testing.assert_array_equal(back.C, 6 * back.N * back.D)
    assert back.run.tolist() == ["a", "b"] and back.step.tolist() == [10, 20]
    with pytest.raises(FileNotFoundError, match="scaling sweep --collect"):
        read_csv(str(tmp_path / "missing.csv"))


def test_metrics_reader_skips_eval_and_truncated_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [{"step": 10, "loss": 5.0}, {"step": 20, "loss": 4.0, "eval_loss": 4.2}, {"step": 20, "note": "x"}]
    path.write_text("\n".join(json.dumps(x) for x in lines) + '\n{"step": 3')
    assert read_metrics(str(path)) == [{"step": 10, "loss": 5.0}, {"step": 20, "loss": 4.0}]
    assert final_eval_loss(str(path)) == 4.2
    path.write_text('{"step": 1, "loss": 2.0}\nnot json\n{"step": 2, "loss": 1.0}\n')
    with pytest.raises(ValueError, match="metrics.jsonl:2 is not JSON"):
        read_metrics(str(path))


def test_resample_modes_keep_structure():
    rng = np.random.default_rng(0)
    groups = [np.arange(0, 3), np.arange(3, 8)]
    within = resample(rng, groups, "within")
    assert np.all(within[:3] < 3) and np.all(within[3:] >= 3)
    units = resample(rng, groups, "units")
    assert len(units) in (6, 8, 10)
    assert len(resample(rng, groups, "rows")) == 8
    with pytest.raises(ValueError, match="bootstrap mode='x'"):
        resample(rng, groups, "x")


def test_bootstrap_interval_of_a_mean_covers_it():
    rng = np.random.default_rng(1)
    runs = make_runs(np.full(200, 1e6), np.full(200, 1e9), 3.0 + 0.1 * rng.standard_normal(200))
    intervals, failed = bootstrap(lambda r: {"mean": float(r.loss.mean())}, runs, n_boot=200, level=0.95)
    lo, hi = intervals["mean"]
    assert failed == 0 and lo < 3.0 < hi and hi - lo == pytest.approx(2 * 1.96 * 0.1 / np.sqrt(200), rel=0.25)
    with pytest.raises(ValueError, match="only 0 of 10"):
        percentile_intervals([], 10, 0.8)
