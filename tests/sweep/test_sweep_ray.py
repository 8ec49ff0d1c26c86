"""The same sweep on a local Ray cluster (2 CPUs, 2 workers) trains the same runs to the same results
as two local worker processes: one Ray task per run, the sweep directory's leases as the truth.

Ray trains two of the six runs (`--only`, an arm of two seeds): enough for two tasks in flight at once,
and the other four staying untouched proves `--only` holds on this executor too."""
import json
import os

import pytest
import ray

from gopher_jax.cli import main
from gopher_jax.sweep import plan, status
from tests.sweep.conftest import sweep_argv


@pytest.fixture
def local_ray_cluster(monkeypatch):
    # Ray's memory monitor kills tasks when the *host* is above 95% memory; on a CI host shared with
    # other jobs that is their memory, not ours (the sweep's own leases would still recover the runs).
    monkeypatch.setenv("RAY_memory_monitor_refresh_ms", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def test_ray_matches_local_workers(finished_sweep, local_ray_cluster, tmp_path):
    out = str(tmp_path / "ray")
    assert main(sweep_argv(out, "--executor=ray", "--workers=2", "--cpus_per_run=1", "--only=position=rope")) == 0
    local_runs, ray_runs = plan.load_plan(finished_sweep)[1], plan.load_plan(out)[1]
    assert [r.name for r in ray_runs] == [r.name for r in local_runs]  # same plan, same names
    trained = [r for r in ray_runs if r.arm == "position=rope"]
    assert len(trained) == 2 and len({r.seed for r in trained}) == 2  # the arm's two seeds
    for r in ray_runs:
        if r not in trained:
            assert status.run_status(os.path.join(out, r.name)) == status.LEFT  # planned, never claimed
            assert not os.path.exists(os.path.join(out, r.name, "attempts.jsonl"))
    for r in trained:
        assert status.run_status(os.path.join(out, r.name)) == status.DONE
        attempts = open(os.path.join(out, r.name, "attempts.jsonl")).read().splitlines()
        assert len(attempts) == 1 and ":ray:" in attempts[0]
        got = json.load(open(os.path.join(out, r.name, "summary.json")))
        want = json.load(open(os.path.join(finished_sweep, r.name, "summary.json")))
        # same devices (4 emulated CPU devices per run), same config: the same numbers
        assert got["final_loss"] == pytest.approx(want["final_loss"], rel=1e-5)
        assert got["eval_bits_per_byte"] == pytest.approx(want["eval_bits_per_byte"], rel=1e-5)
    # a second driver on the finished runs submits nothing
    assert main(sweep_argv(out, "--executor=ray", "--workers=2", "--only=position=rope")) == 0
    assert all(len(open(os.path.join(out, r.name, "attempts.jsonl")).read().splitlines()) == 1 for r in trained)
