"""Killing a sweep mid-run and running it again trains only the unfinished run, which resumes from its
checkpoint; the finished one is not touched."""
import json
import os
import signal
import subprocess
import sys
import time

from gopher_jax.cli import main
from gopher_jax.sweep import plan
from tests.sweep.conftest import TEST_PARAMS, sweep_argv

TTL_S = 3  # a killed worker's run is reclaimed this long after its last heartbeat
# Two runs zipped with their lengths: a short one that finishes, a long one (slowed by the train
# loop's own fault injection) that is killed after its first checkpoint. 12 steps: >= 3 s (10 slowed
# steps) between that checkpoint and the run's end for the 0.2 s poll below to kill it, and 10 steps
# left for the second attempt to show it resumed rather than restarted.
LONG = 12
AXES = ["train.seed=0,1", f"train.steps=3,{LONG}"]
PARAMS = [p for p in TEST_PARAMS if not p.startswith(("train.steps", "train.checkpoint_every"))] + [
    "train.checkpoint_every=2", "faults.sleep_per_step_s=0.3"]


def _argv(out, *extra):
    return sweep_argv(out, f"--ttl={TTL_S}", "--zip=train.seed,train.steps", *extra, params=PARAMS, axes=AXES,
                      baseline="")


def _checkpoint_steps(run_dir):
    d = os.path.join(run_dir, "checkpoints")
    return sorted(int(n) for n in os.listdir(d) if n.isdigit()) if os.path.isdir(d) else []


def _attempts(run_dir):
    return [json.loads(line) for line in open(os.path.join(run_dir, "attempts.jsonl"))]


def test_killed_sweep_resumes_only_the_unfinished_run(tmp_path):
    out = str(tmp_path / "sweep")
    proc = subprocess.Popen([sys.executable, "-m", "gopher_jax.cli", *_argv(out)], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if os.path.isfile(os.path.join(out, plan.PLAN_FILE)):
                short, long_ = plan.load_plan(out)[1]
                if _checkpoint_steps(os.path.join(out, long_.name)):
                    break
            time.sleep(0.2)
        assert proc.poll() is None, "the sweep ended before the long run wrote a checkpoint"
        os.killpg(proc.pid, signal.SIGKILL)  # the worker (and its training) dies without a word
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    short_dir, long_dir = os.path.join(out, short.name), os.path.join(out, long_.name)
    assert os.path.isfile(os.path.join(short_dir, "DONE")) and not os.path.exists(os.path.join(long_dir, "DONE"))
    killed_at = _checkpoint_steps(long_dir)[-1]
    assert 2 <= killed_at < LONG

    code = main(_argv(out))  # the same command again, in this process
    assert code == 0, open(os.path.join(long_dir, "train.log")).read()[-3000:]
    assert len(_attempts(short_dir)) == 1  # finished: not trained again
    again = _attempts(long_dir)
    assert len(again) == 2 and again[1]["generation"] == 1  # reclaimed after the dead worker's lease expired
    log = open(os.path.join(long_dir, "train.log")).read()
    assert f"resumed from step {killed_at}" in log
    assert json.load(open(os.path.join(long_dir, "summary.json")))["step"] == LONG
    steps = [json.loads(line)["step"] for line in open(os.path.join(long_dir, "metrics.jsonl"))
             if '"loss"' in line]
    assert steps[-1] == LONG and killed_at + 1 in steps  # the second attempt logged from the checkpoint on
