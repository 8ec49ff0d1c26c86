"""Two local processes x 4 CPU devices train like one process x 8 devices (same global batches)."""
import json
import os
import socket
import subprocess
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PARAMS = ["ModelConfig.num_layers=2", "ModelConfig.d_model=64", "ModelConfig.num_heads=4",
          "ModelConfig.head_dim=16", "train.steps=3", "train.batch_size=8", "train.seq_len=64",
          "train.log_every=1", "train.eval_every=0", "train.eval_batches=2", "train.checkpoint_every=2"]
ARGS = ["--gin_file=gin_configs/runs/pretrain.gin", "--gin_file=gin_configs/models/tiny.gin",
        *[f"--gin_param={p}" for p in PARAMS], "--no_progress"]


def _env(devices):
    env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    for k in ("GOPHER_JAX_COORDINATOR", "GOPHER_JAX_NUM_PROCESSES", "GOPHER_JAX_PROCESS_ID"):
        env.pop(k, None)
    return env


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _losses(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line)["loss"] for line in f if '"loss"' in line]


def test_two_processes_match_one(tmp_path):
    from gopher_jax.data.tokenizer import ensure_embedded_tokenizer

    ensure_embedded_tokenizer(4096)  # tiny.gin's vocabulary: cached once here, not raced by three processes
    # All three processes at once: the pair must run concurrently anyway, and the reference overlaps.
    ref = subprocess.Popen([sys.executable, os.path.join(REPO, "tests/plan/reference_run.py"),
                            f"--workdir={tmp_path / 'one'}", *ARGS], cwd=REPO, env=_env(8),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "gopher_jax.cli", "train", f"--workdir={tmp_path / 'two'}",
                               *ARGS, f"--coordinator=localhost:{port}", "--num_processes=2", f"--process_id={i}"],
                              cwd=REPO, env=_env(4), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in (ref, *procs)]
    for p, out in zip((ref, *procs), outs):
        assert p.returncode == 0, out[-3000:]
    outs = outs[1:]

    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(one) == len(two) == 3
    np.testing.assert_allclose(two, one, rtol=1e-5)
    # Every host took part in the checkpoint; process 0 alone wrote the logs.
    assert sorted(os.listdir(tmp_path / "two" / "checkpoints")) == ["2", "3"]
    assert "done: step 3" in outs[0] and "done: step 3" in outs[1]
