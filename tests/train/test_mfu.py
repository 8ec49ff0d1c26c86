"""The one MFU: model FLOPs (causal, embedding as a gather) x global tokens/s / global peak.

The training loop's progress bar and metrics.jsonl, the benchmark and `plan` all go through
gopher_jax/train/mfu.py; these tests hold the loop's numbers against the benchmark's function
and against a hand count. The multi-process bookkeeping (global tokens/s over one host's peak) is
asserted in tests/plan/test_multiprocess.py.
"""
import importlib.util
import json
import os
import subprocess
import sys
import types

import pytest

from gopher_jax.model.config import ModelConfig
from gopher_jax.model.param_count import count_params
from gopher_jax.train import mfu

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# A small tiny.gin: 2 layers of d 64 (4 heads x 16), vocabulary 4096, 64-token sequences.
PARAMS = ["ModelConfig.num_layers=2", "ModelConfig.d_model=64", "ModelConfig.num_heads=4",
          "ModelConfig.head_dim=16", "train.batch_size=8", "train.seq_len=64", "train.steps=3",
          "train.log_every=1", "train.eval_every=0", "train.eval_batches=1", "train.checkpoint_every=100"]
CFG = ModelConfig(num_layers=2, d_model=64, num_heads=4, head_dim=16, vocab_size=4096, max_len=256)
T = 64


def hand_count_per_token(L=2, d=64, H=4, k=16, f=256, V=4096, t=T) -> float:
    """Training FLOPs per token of CFG written out: Transformer-XL attention over the t(t+1)/2
    causal pairs, GELU MLP, tied logits; the embedding a gather; backward = 2 x forward."""
    hk, pairs = H * k, t * (t + 1) / 2
    layer = (2 * t * d * 3 * hk            # Q, K, V projections
             + 2 * pairs * hk + 3 * H * pairs + 2 * pairs * hk  # logits, softmax, reduction
             + 2 * t * d * hk + 2 * pairs * hk  # relative: sinusoid projection, position logits
             + 2 * t * hk * d               # output projection
             + 2 * t * 2 * d * f)           # MLP
    return 3 * (L * layer + 2 * t * d * V) / t


def _benchmark_module():
    spec = importlib.util.spec_from_file_location("train_throughput", os.path.join(REPO, "benchmarks",
                                                                                  "train_throughput.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mfu_fields_against_a_hand_count():
    tokens_per_s, peak = 1234.5, 4.0e11
    m = mfu.mfu_fields(CFG, T, tokens_per_s, peak)
    assert m["mfu_count"] == mfu.COUNT == "model_causal"
    assert m["mfu"] == pytest.approx(hand_count_per_token() * tokens_per_s / peak, rel=1e-12)
    assert m["mfu_6n"] == pytest.approx(6 * count_params(CFG)["total"] * tokens_per_s / peak, rel=1e-12)


def test_tpu_peak_is_the_chip_spec_per_device():
    # plan/hardware.py: v3 chips are 2 devices of 61.5 TFLOP/s bf16 each, a v4 megacore device 275.
    assert mfu.spec_peak_per_device(types.SimpleNamespace(device_kind="TPU v3")) == 123e12 / 2
    assert mfu.spec_peak_per_device(types.SimpleNamespace(device_kind="TPU v4")) == 275e12
    assert mfu.spec_peak_per_device(types.SimpleNamespace(device_kind="TPU v5 lite")) == 197e12
    assert mfu.spec_peak_per_device(types.SimpleNamespace(device_kind="cpu")) is None


def test_progress_bar_mfu_equals_the_benchmarks(tmp_path):
    from gopher_jax.data.tokenizer import ensure_embedded_tokenizer

    ensure_embedded_tokenizer(4096)
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device, a laptop run
    cmd = [sys.executable, "-m", "gopher_jax.cli", "train", "--gin_file=gin_configs/runs/pretrain.gin",
           "--gin_file=gin_configs/models/tiny.gin", f"--workdir={tmp_path}", *[f"--gin_param={p}" for p in PARAMS]]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(tmp_path / "summary.json") as f:
        summary = json.load(f)
    with open(tmp_path / "metrics.jsonl") as f:
        records = [r for r in map(json.loads, f) if r.get("tokens_per_s")]
    assert records and summary["peak_hosts"] == 1 and "measured fp32 matmul" in summary["peak_source"]
    assert summary["flops_per_token"] == pytest.approx(hand_count_per_token(), rel=1e-12)
    assert summary["tokens_per_step"] == 8 * 64
    bench = _benchmark_module()
    for r in records:
        # Same config, same tokens/s, same peak: the benchmark's MFU is the loop's, to the bit.
        assert bench.mfu_of(CFG, T, r["tokens_per_s"], summary["peak_flops"]) == {
            k: r[k] for k in ("mfu", "mfu_count", "mfu_6n")}
        assert r["mfu"] == pytest.approx(hand_count_per_token() * r["tokens_per_s"] / summary["peak_flops"])
    assert summary["mfu_count"] == "model_causal" and summary["mfu_6n"] > 0
    # The progress bar names the count beside the number (tqdm writes to stderr).
    assert "model_causal" in proc.stderr and "mfu_6n=" in proc.stderr
    assert "(model_causal FLOPs;" in proc.stdout


def test_peak_is_measured_in_the_runs_precision(tmp_path, monkeypatch):
    """A bf16 run divides by the best bf16 GEMM of the host (fp32 sums included), an fp32 run by fp32."""
    import jax.numpy as jnp

    monkeypatch.setenv("GOPHER_JAX_KERNEL_CACHE", str(tmp_path))  # an empty peak cache: measured here

    from gopher_jax.kernels import cpu_gemm, mkl_gemm

    device = mfu.jax.local_devices()[0]
    n_bf16 = len(mfu._matmul_candidates(jnp.bfloat16, device))
    # XLA's dot (+ its fp32-summing bf16 dot), our kernel and MKL: every GEMM the model can use
    assert n_bf16 == len(mfu._matmul_candidates(jnp.float32, device)) + 1 == 2 + cpu_gemm.available() + mkl_gemm.available()
    bf16, fp32 = mfu.global_peak(seconds=0.01, dtype="bfloat16"), mfu.global_peak(seconds=0.01)
    assert bf16.source == "measured bf16 matmul, 1 host(s) (cached for this host)"
    assert fp32.source == "measured fp32 matmul, 1 host(s) (cached for this host)"
    assert bf16.flops > 0 and fp32.flops > 0


def test_cached_peak_skips_measuring_and_only_rises(tmp_path, monkeypatch):
    """The host's peak is measured once and cached; a re-measure can raise it, never lower it."""
    monkeypatch.setenv("GOPHER_JAX_KERNEL_CACHE", str(tmp_path))
    monkeypatch.delenv(mfu.PEAK_REMEASURE_ENV, raising=False)
    measured = iter([300e9, 100e9, 400e9])
    calls = []

    def fake_measure(dtype, seconds):
        calls.append(dtype)
        return next(measured)

    monkeypatch.setattr(mfu, "measure_matmul_peak", fake_measure)
    assert mfu.cached_matmul_peak("float32") == (300e9, False)
    assert mfu.cached_matmul_peak("float32") == (300e9, True) and len(calls) == 1  # cache hit: no measuring
    assert mfu.global_peak(dtype="float32").flops == 300e9 and len(calls) == 1
    monkeypatch.setenv(mfu.PEAK_REMEASURE_ENV, "1")
    assert mfu.cached_matmul_peak("float32") == (300e9, False)  # measured 100: the cache keeps 300
    assert mfu.cached_matmul_peak("float32") == (400e9, False)  # measured 400: raised
    monkeypatch.delenv(mfu.PEAK_REMEASURE_ENV)
    assert mfu.cached_matmul_peak("float32") == (400e9, True) and len(calls) == 3
    # Each precision has its own entry.
    monkeypatch.setattr(mfu, "measure_matmul_peak", lambda dtype, seconds: 900e9)
    assert mfu.cached_matmul_peak("bfloat16") == (900e9, False)
    assert mfu.cached_matmul_peak("float32") == (400e9, True)


def test_a_short_peak_probe_never_serves_a_full_length_run(tmp_path, monkeypatch):
    """The suite's 0.2 s probes (beside the other worker) read low: they serve the suite's processes, but a
    run measuring for the default 1 s measures anew, and its peak replaces the short one."""
    monkeypatch.setenv("GOPHER_JAX_KERNEL_CACHE", str(tmp_path))
    monkeypatch.delenv(mfu.PEAK_REMEASURE_ENV, raising=False)
    monkeypatch.setattr(mfu, "measure_matmul_peak", lambda dtype, seconds: 100e9 * seconds)
    assert mfu.cached_matmul_peak("float32", seconds=0.2) == (20e9, False)
    assert mfu.cached_matmul_peak("float32", seconds=0.2) == (20e9, True)  # shared by the short probes
    assert mfu.cached_matmul_peak("float32", seconds=1.0) == (100e9, False)  # not served the short one
    assert mfu.cached_matmul_peak("float32", seconds=0.2) == (100e9, True)
    assert mfu.cached_matmul_peak("float32", seconds=2.0) == (100e9, True)  # 1 s is full length
    monkeypatch.setattr(mfu, "measure_matmul_peak", lambda dtype, seconds: 500e9)
    assert mfu.remember_matmul_peak("float32", 500e9, seconds=0.2) == 500e9  # used, but not stored over it
    assert mfu.cached_matmul_peak("float32", seconds=1.0) == (100e9, True)
