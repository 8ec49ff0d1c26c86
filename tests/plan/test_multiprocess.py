"""Two local processes x 4 CPU devices train like one process x 8 devices (same global batches),
and two fresh processes resume the pair's checkpoint (written and restored by both hosts) and
continue exactly like the uninterrupted single-process run."""
import json
import os
import socket
import subprocess
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# A flat learning rate after one warmup step, so a run stopped at step 2 and resumed to step 4
# follows the same schedule as one run of 4 steps (the cosine schedule's length is train.steps).
PARAMS = ["ModelConfig.num_layers=2", "ModelConfig.d_model=64", "ModelConfig.num_heads=4",
          "ModelConfig.head_dim=16", "train.batch_size=8", "train.seq_len=64",
          "train.log_every=1", "train.eval_every=0", "train.eval_batches=2", "train.checkpoint_every=2",
          "optimizer.schedule='constant'", "optimizer.warmup_steps=1"]
ARGS = ["--gin_file=gin_configs/runs/pretrain.gin", "--gin_file=gin_configs/models/tiny.gin",
        *[f"--gin_param={p}" for p in PARAMS], "--no_progress"]
FIRST, TOTAL = 2, 4  # the pair trains FIRST steps, the fresh pair resumes to TOTAL


def _env(devices, cache_dir):
    # The resuming pair compiles the same programs as the first pair: a shared persistent cache
    # saves it the compile (as a restarted job on the same slice would).
    env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               JAX_COMPILATION_CACHE_DIR=str(cache_dir), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    for k in ("GOPHER_JAX_COORDINATOR", "GOPHER_JAX_NUM_PROCESSES", "GOPHER_JAX_PROCESS_ID"):
        env.pop(k, None)
    return env


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _losses(workdir):
    """{step: loss} from metrics.jsonl (a resumed run appends to it)."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return {r["step"]: r["loss"] for r in map(json.loads, f) if "loss" in r}


def _pair(workdir, steps, *extra):
    port = _free_port()
    return [subprocess.Popen([sys.executable, "-m", "gopher_jax.cli", "train", f"--workdir={workdir}", *ARGS,
                              f"--gin_param=train.steps={steps}", *extra, f"--coordinator=localhost:{port}",
                              "--num_processes=2", f"--process_id={i}"],
                             cwd=REPO, env=_env(4, workdir.parent / "jax_cache"), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
            for i in range(2)]


def _finish(procs):
    outs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    return outs


def test_two_processes_match_one_and_resume(tmp_path):
    from gopher_jax.data.tokenizer import ensure_embedded_tokenizer

    ensure_embedded_tokenizer(4096)  # tiny.gin's vocabulary: cached once here, not raced by three processes
    # The reference runs alongside both pairs (the pair must run concurrently anyway).
    ref = subprocess.Popen([sys.executable, os.path.join(REPO, "tests/plan/reference_run.py"),
                            f"--workdir={tmp_path / 'one'}", *ARGS, f"--gin_param=train.steps={TOTAL}"],
                           cwd=REPO, env=_env(8, tmp_path / "jax_cache_ref"), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    two = tmp_path / "two"
    outs = _finish(_pair(two, FIRST))
    assert "done: step 2" in outs[0] and "done: step 2" in outs[1]
    # Every host took part in the checkpoint; process 0 alone wrote the logs.
    assert sorted(os.listdir(two / "checkpoints")) == ["2"]
    first = _losses(two)
    assert sorted(first) == [1, 2]

    # Two fresh processes restore the checkpoint (params, optimizer state, each host's data position).
    outs = _finish(_pair(two, TOTAL, "--resume"))
    _finish([ref])
    assert all("resumed from step 2" in out and "done: step 4" in out for out in outs), outs[0][-2000:]
    one, resumed = _losses(tmp_path / "one"), _losses(two)
    assert sorted(one) == sorted(resumed) == [1, 2, 3, 4]
    np.testing.assert_allclose([resumed[s] for s in (1, 2, 3, 4)], [one[s] for s in (1, 2, 3, 4)], rtol=1e-5)
    assert sorted(os.listdir(two / "checkpoints")) == ["2", "4"]
