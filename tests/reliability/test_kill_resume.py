"""Real `gopher-jax train` subprocesses killed (SIGKILL), preempted (SIGTERM) and resumed from a
corrupted newest checkpoint: the per-step losses equal an uninterrupted run's, bit for bit.

One chain of runs covers several faults (each subprocess costs ~30 s of imports and compile):
  reference: uninterrupted, 8 steps, NaN loss injected at batch 4 (skip policy drops that update)
  run 1: SIGKILL once step >= 5 is logged (checkpoints every 2 steps: the kill lands after one,
         sometimes while the next is being written: then the orbax temp dir is reported and moved aside)
  run 2: --resume, SIGTERM once a new step is logged -> checkpoint, exit code EXIT_PREEMPTED
  run 3: --resume after truncating a file of the newest (preemption) checkpoint -> reported,
         falls back to the previous checkpoint, finishes.
"""
import glob
import json
import math
import os
import signal
import subprocess
import sys
import time

from gopher_jax.train.checkpoint_integrity import MANIFEST_NAME
from gopher_jax.train.signals import EXIT_PREEMPTED
from tests.conftest import COMPILE_FLAGS

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# tiny.gin at 2 layers x 64 wide: bit-identical replays, checkpoint fallbacks and the data position
# do not depend on the model's size; each of the four processes compiles a smaller step.
SMALL = ("ModelConfig.num_layers=2", "ModelConfig.d_model=64", "ModelConfig.num_heads=4", "ModelConfig.head_dim=16")
PARAMS = ("train.steps=8", "train.seq_len=64", "train.batch_size=4", "train.log_every=1", "train.eval_every=0",
          "train.eval_batches=1", "train.checkpoint_every=2", "train.keep_checkpoints=2",
          "train.spike_policy='skip'", "train.spike_warmup_steps=2", "faults.nan_loss_batches=(4,)", *SMALL)
SLOW = ("faults.sleep_per_step_s=0.6",)  # gives the test time to signal mid-run; numerics unchanged


def start(workdir, *params, resume=False):
    # one CPU device, like a laptop run; the suite's compile flags (tests/conftest.py): every process of a
    # test compiles alike, and these programs run a few steps
    env = dict(os.environ, XLA_FLAGS=COMPILE_FLAGS)
    cmd = [sys.executable, "-m", "gopher_jax.cli", "train", "--gin_file=gin_configs/runs/pretrain.gin",
           "--gin_file=gin_configs/models/tiny.gin", f"--workdir={workdir}", "--no_progress"]
    cmd += [f"--gin_param={p}" for p in params] + (["--resume"] if resume else [])
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def records(workdir):
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.endswith("\n")]


def wait_for(proc, workdir, predicate, timeout=300):
    """Polls metrics.jsonl until predicate(records) holds; fails if the process ends first."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if predicate(records(workdir)):
            return
        if proc.poll() is not None:
            raise AssertionError(f"run ended (code {proc.returncode}) before the signal: {proc.stderr.read()[-3000:]}")
        time.sleep(0.05)
    raise AssertionError("timed out waiting for the run")


def finish(proc, timeout=600):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def same(a, b):
    return a == b or (math.isnan(a) and math.isnan(b))


def test_sigkill_sigterm_corrupt_resume_bit_identical(tmp_path):
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    ref = start(ref_dir, *PARAMS)

    # run 1: SIGKILL right after step 5 is logged: checkpoint 2 is complete, 4 complete or being written
    run = start(run_dir, *PARAMS, *SLOW)
    wait_for(run, run_dir, lambda rs: any(r.get("step", 0) >= 5 and "loss" in r for r in rs))
    run.send_signal(signal.SIGKILL)
    code, _, _ = finish(run)
    assert code == -signal.SIGKILL
    killed_at = max(r["step"] for r in records(run_dir))
    assert 5 <= killed_at < 8
    listing = os.listdir(run_dir / "checkpoints")
    complete = sorted(int(d) for d in listing if d.isdigit())
    interrupted = [d for d in listing if "orbax-checkpoint-tmp" in d]  # the kill may land mid-save
    assert complete and complete[-1] <= killed_at

    # run 2: resume, then SIGTERM once it has logged a step of its own
    n_before = len(records(run_dir))
    run = start(run_dir, *PARAMS, *SLOW, resume=True)
    wait_for(run, run_dir, lambda rs: len(rs) > n_before)
    run.send_signal(signal.SIGTERM)
    code, out, err = finish(run)
    assert code == EXIT_PREEMPTED, err[-3000:]
    resumed_from = int(out.split("resumed from step ")[1].split()[0])
    assert resumed_from in complete
    if resumed_from != complete[-1]:  # a kill between orbax's rename and its metadata: reported, skipped
        assert f"checkpoint step {complete[-1]} is corrupt or partial" in err, err[-3000:]
    for tmp in interrupted:
        assert f"ignoring an interrupted save {run_dir / 'checkpoints' / tmp}" in err, err[-3000:]
    preempted = [r for r in records(run_dir) if r.get("event") == "preempted"]
    assert len(preempted) == 1 and preempted[0]["signal"] == "SIGTERM"
    stop_step = preempted[0]["step"]
    stop_dir = run_dir / "checkpoints" / str(stop_step)
    assert (stop_dir / MANIFEST_NAME).exists(), "the preemption checkpoint must be complete before exit"

    # run 3: truncate the biggest array file of the newest checkpoint, resume, finish
    victim = max((p for p in glob.glob(str(stop_dir / "state" / "**" / "*"), recursive=True) if os.path.isfile(p)),
                 key=os.path.getsize)
    with open(victim, "r+b") as f:
        f.truncate(os.path.getsize(victim) // 2)
    older = sorted(int(d) for d in os.listdir(run_dir / "checkpoints") if d.isdigit() and int(d) < stop_step)
    assert older, "keep_checkpoints=2 must leave an older checkpoint to fall back to"
    run = start(run_dir, *PARAMS, resume=True)
    code, out, err = finish(run)
    assert code == 0, err[-3000:]
    assert f"checkpoint step {stop_step} is corrupt or partial" in err and os.path.basename(victim) in err, err[-3000:]
    assert f"falling back to step {older[-1]}" in err
    assert f"resumed from step {older[-1]}" in out
    assert glob.glob(str(tmp_path / "run" / "checkpoints_corrupt" / f"{stop_step}.*")), "bad checkpoint kept aside"

    code, _, err = finish(ref)
    assert code == 0, err[-3000:]
    expected = {r["step"]: r for r in records(ref_dir) if "loss" in r}
    assert sorted(expected) == list(range(1, 9))
    assert math.isnan(expected[5]["loss"]) and expected[5]["update_skipped"] == 1.0  # batch 4 = step 5
    got = [r for r in records(run_dir) if "loss" in r]
    assert {r["step"] for r in got} == set(range(1, 9))
    for r in got:  # every time a step ran (first try and replays) it saw the same batch and state
        for key in ("loss", "grad_norm", "skipped_updates", "loss_ema"):
            assert same(r[key], expected[r["step"]][key]), (r["step"], key, r[key], expected[r["step"]][key])
    # the data position saved with the final checkpoint: 8 batches, none replayed or skipped
    with open(run_dir / "checkpoints" / "8" / "data" / "metadata") as f:
        assert json.load(f)["batches_consumed"] == 8
