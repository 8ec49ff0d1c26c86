"""Two local processes x 4 CPU devices train like one process x 8 devices (same global batches: the
input is addressed by global row, gopher_jax/data/mixture_input.py), and a checkpoint resumes on
another host count, continuing exactly like the uninterrupted single-process run.

The one-process runs go through `gopher-jax train`'s entry point (gopher_jax.cli.main) in this process,
which already has 8 CPU devices and JAX imported; only the pairs need processes of their own."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import COMPILE_FLAGS

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
               # the suite's compile flags (tests/conftest.py): these programs run a few steps
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices} {COMPILE_FLAGS}",
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


def _single(capsys, workdir, steps, *extra):
    """`gopher-jax train` as one process x 8 devices, in this process: returns its stdout + stderr."""
    import jax

    from gopher_jax.cli import main
    capsys.readouterr()
    with jax.default_matmul_precision(None):  # a `gopher-jax` process's default, not conftest's 'highest'
        code = main(["train", f"--workdir={workdir}", *ARGS, f"--gin_param=train.steps={steps}", *extra])
    out = "".join(capsys.readouterr())
    assert code == 0, out[-3000:]
    return out


def test_two_processes_match_one_and_resume_across_host_counts(tmp_path, capsys, monkeypatch):
    """2 processes x 4 devices == 1 process x 8 devices, step for step; a checkpoint written by the pair
    resumes on one process, and one written by one process resumes on a pair (same global batches)."""
    from gopher_jax.data.tokenizer import ensure_embedded_tokenizer

    monkeypatch.chdir(REPO)  # ARGS name the gin files relative to the repository
    ensure_embedded_tokenizer(4096)  # tiny.gin's vocabulary: cached once here, not raced by the processes
    one, pair_first, single_first = tmp_path / "one", tmp_path / "pair_then_one", tmp_path / "one_then_pair"
    pair = _pair(pair_first, FIRST)  # the pair trains while this process runs the one-process runs
    _single(capsys, single_first, FIRST)
    _single(capsys, one, TOTAL)
    outs = _finish(pair)
    assert "done: step 2" in outs[0] and "done: step 2" in outs[1]
    # Every host took part in the pair's checkpoint; process 0 alone wrote the logs.
    assert sorted(os.listdir(pair_first / "checkpoints")) == ["2"]
    assert sorted(_losses(pair_first)) == [1, 2]

    # The pair's checkpoint resumes on one process; the single process's on a fresh pair.
    pair = _pair(single_first, TOTAL, "--resume")
    outs = [_single(capsys, pair_first, TOTAL, "--resume")] + _finish(pair)
    assert all("resumed from step 2" in out and "done: step 4" in out for out in outs), outs[0][-2000:]
    reference = _losses(one)
    assert sorted(reference) == [1, 2, 3, 4]
    for run in (pair_first, single_first):
        got = _losses(run)
        assert sorted(got) == [1, 2, 3, 4]
        np.testing.assert_allclose([got[s] for s in (1, 2, 3, 4)], [reference[s] for s in (1, 2, 3, 4)], rtol=1e-5)
        assert sorted(os.listdir(run / "checkpoints")) == ["2", "4"]
    _assert_same_mfu_bookkeeping(one, single_first)  # single_first's steps 3-4 (its summary) ran on the pair


def _assert_same_mfu_bookkeeping(one, two):
    """The pair reports the MFU of the one-process run of the same work: global tokens/s (the whole
    batch) over the global peak, where two processes on one host count the host's peak once.
    Asserted on the bookkeeping, not on timings, which the concurrent runs make noisy."""
    summaries = []
    for run in (one, two):
        with open(run / "summary.json") as f:
            summaries.append(json.load(f))
        s = summaries[-1]
        assert s["peak_hosts"] == 1 and s["mfu_count"] == "model_causal", s
        with open(run / "metrics.jsonl") as f:
            records = [r for r in map(json.loads, f) if r.get("tokens_per_s")]
        for r in records[-1:]:  # the newest run's record (an appended-to log holds the first run's too)
            assert r["mfu"] == pytest.approx(s["flops_per_token"] * r["tokens_per_s"] / s["peak_flops"])
    ref, pair = summaries
    assert pair["flops_per_token"] == ref["flops_per_token"]
    assert pair["tokens_per_step"] == ref["tokens_per_step"] == 8 * 64  # global batch x seq_len
