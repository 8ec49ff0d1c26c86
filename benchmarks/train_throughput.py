"""Training throughput and MFU of the real sharded train step, against this machine's matmul peak.

    python benchmarks/train_throughput.py --gin_file=gin_configs/models/gopher_44m.gin \
        --seq_len=512 --batch_size=8 --json benchmarks/results/gopher_44m_seq512.json

Measures, in one process: both precisions' matmul peaks (2 s each, `peak_gflops_<dtype>_now`) and
the peak MFU divides by (`gopher_jax.train.mfu.global_peak`, as the training loop does: on CPU the
best jitted 2048² matmul in the run's ModelConfig.dtype ever measured on this host, cached), the CPU model and its matmul flags, what ModelConfig.matmul_impl=auto picked per
GEMM shape and why (`matmul_auto_decisions`), the compile
time of the train step (lower + compile), the steady-state step time (median of `--steps` timed steps
after a warm-up step), tokens/s, FLOPs per token by each count, and MFU by the one definition
(`gopher_jax.train.mfu.mfu_fields`, the function the loop's progress bar and metrics.jsonl use):
`mfu` with `mfu_count` = 'model_causal' (causal attention counted once, the embedding as a gather,
no recompute) and `mfu_6n` (6·N·tokens); also the compiled step's memory and the process's peak
RSS. `--data real` feeds batches from the embedded corpus through the training input pipeline
instead of a fixed synthetic batch, to show input is not the bottleneck.

The step is the one `gopher-jax train` runs (build_trainer: AdamW, clipping, donated state), on a
one-device mesh: XLA's CPU backend spreads one device's matmuls over all cores.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # host_info


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gin_file", action="append", default=[], help="model gin file(s), e.g. gin_configs/models/gopher_44m.gin")
    p.add_argument("--gin_param", action="append", default=[], help="extra gin bindings (ablations, remat, dtype)")
    p.add_argument("--seq_len", type=int, default=512)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--steps", type=int, default=5, help="timed steps after the warm-up step")
    p.add_argument("--no_peak", action="store_true", help="skip the matmul-peak measurement (quick A/B runs)")
    p.add_argument("--data", choices=("synthetic", "real"), default="synthetic",
                   help="synthetic: one fixed random batch; real: the embedded corpus via the input pipeline")
    p.add_argument("--profile_dir", default="", help="write a jax.profiler trace of two steps here (TensorBoard/Perfetto); "
                   "the JSON gets their op seconds per step by kind (`profile_op_s_per_step`)")
    p.add_argument("--paired_env", default="", metavar="NAME=VALUE",
                   help="A/B in this process: also compile the step with environment variable NAME=VALUE "
                        "(read at trace time, e.g. GOPHER_JAX_ATTN_BF16=0) and time the two alternately, "
                        "step by step, so both see the same load (`paired`: both medians and the median ratio)")
    p.add_argument("--json", default="", help="write the results here")
    p.add_argument("--host_hugepages", choices=("auto", "off"), default="auto",
                   help="auto: restart under glibc.malloc.hugetlb=1 as `gopher-jax` does "
                        "(gopher_jax/host_memory.py); off: measure without it")
    return p.parse_args(argv)


def measure_peaks(dtype: str) -> dict:
    """Returns the peak MFU divides by (the training loop's `global_peak` in the run's `dtype`: the
    host's cached best) and both precisions' matmul peaks (each the best of the project's GEMMs),
    after measuring both for 2 s here (`peak_gflops_*_now`), which can only raise the cache."""
    import jax.numpy as jnp

    from gopher_jax.train.mfu import global_peak, measure_matmul_peak, remember_matmul_peak
    now = {name: measure_matmul_peak(name, seconds=2.0) for name in ("float32", "bfloat16")}
    for name, flops in now.items():
        remember_matmul_peak(name, flops)
    peaks = {d: global_peak(dtype=d) for d in ("float32", "bfloat16")}  # the cached max, incl. `now`
    peak = peaks[jnp.dtype(dtype).name]
    return {"peak_gflops": peak.flops / 1e9, "peak_source": peak.source,
            "peak_gflops_fp32": peaks["float32"].flops / 1e9, "peak_gflops_bf16": peaks["bfloat16"].flops / 1e9,
            "peak_gflops_fp32_now": now["float32"] / 1e9, "peak_gflops_bf16_now": now["bfloat16"] / 1e9}


def synthetic_batches(batch_size: int, seq_len: int, vocab: int):
    """Yields one fixed batch of random tokens, forever (one document per row)."""
    import numpy as np
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, vocab, size=(batch_size, seq_len + 1), dtype=np.int32)
    batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:],
             "loss_weights": np.ones((batch_size, seq_len), np.float32),
             "segment_ids": np.ones((batch_size, seq_len), np.int32),
             "positions": np.broadcast_to(np.arange(seq_len, dtype=np.int32), (batch_size, seq_len)).copy()}
    while True:
        yield batch


def real_batches(batch_size: int, seq_len: int, vocab: int):
    """Returns the training loop's input over the embedded mixture (tokenizer capped at `vocab`)."""
    import data_tasks
    from gopher_jax.data import tokenizer
    from gopher_jax.data.training_data import build_training_data
    path = tokenizer.ensure_embedded_tokenizer(min(vocab, 4096))
    train_task = data_tasks.register_for_training(path, verbose=False)
    return build_training_data(train_task, seq_len=seq_len, global_batch=batch_size, seed=0, eval_batches=1,
                               progress=False).train


def mfu_of(model_cfg, seq_len: int, tokens_per_s: float, peak_flops: float) -> dict:
    """Returns {"mfu", "mfu_count", "mfu_6n"}: the training loop's MFU (gopher_jax/train/mfu.py)."""
    from gopher_jax.train.mfu import mfu_fields
    return mfu_fields(model_cfg, seq_len, tokens_per_s, peak_flops)


def op_seconds(profile_dir: str, hlo_text: str, steps: int, top: int = 0) -> dict:
    """Returns seconds per step of the profiled steps' XLA ops by kind, summed from the trace:
    `matmul_xla` (XLA dots / YNNPACK fusions), `matmul_kernel` (kernels/cpu_gemm, kernels/mkl_gemm), `loss_kernel`
    (kernels/cpu_xent), `attention_kernel` (the other custom calls) and `other` (elementwise, converts, reductions, the optimizer). Ops that
    XLA runs concurrently overlap, so the kinds can sum to more than the step. With `top` > 0 it also
    has "top_other": the `top` costliest single ops of kind `other` ([seconds per step, name, the
    start of its HLO instruction]), to say what the next cost is."""
    import collections
    import glob
    import gzip
    import re

    kinds, text = {}, {}
    for line in hlo_text.splitlines():
        m = re.match(r"\s*(?:ROOT )?%?([\w.-]+) = (.*)", line)
        if not m:
            continue
        name, rest = m.groups()
        text.setdefault(name, rest[:200])
        if "custom_call_target=\"gopher_cpu_gemm" in rest or "custom_call_target=\"gopher_mkl_gemm" in rest:
            kinds[name] = "matmul_kernel"
        elif "custom_call_target=\"gopher_cpu_xent" in rest:
            kinds[name] = "loss_kernel"
        elif "custom_call_target=" in rest:
            kinds[name] = "attention_kernel"
        elif name.startswith(("ynn_fusion", "dot")) or " dot(" in rest:
            kinds[name] = "matmul_xla"
        else:
            kinds.setdefault(name, "other")
    totals, per_op = collections.Counter(), collections.Counter()
    # Only this run's trace: jax.profiler writes each run to a new timestamped directory, and an
    # earlier run's files in the same --profile_dir would be counted again.
    paths = glob.glob(os.path.join(profile_dir, "**", "*.trace.json.gz"), recursive=True)
    newest = max((os.path.dirname(p) for p in paths), key=os.path.getmtime, default=None)
    for path in (p for p in paths if os.path.dirname(p) == newest):
        with gzip.open(path) as f:
            for e in json.load(f)["traceEvents"]:
                if e.get("ph") == "X" and e.get("name") in kinds:
                    totals[kinds[e["name"]]] += e["dur"] / 1e6 / steps
                    per_op[e["name"]] += e["dur"] / 1e6 / steps
    result = {k: totals.get(k, 0.0) for k in ("matmul_xla", "matmul_kernel", "attention_kernel", "loss_kernel",
                                              "other")}
    if top:
        others = [(s, n) for n, s in per_op.items() if kinds[n] == "other"]
        result["top_other"] = [[round(s, 4), n, text.get(n, "")] for s, n in sorted(others, reverse=True)[:top]]
    return result


def paired_steps(args, trainer, compiled, state, batches, build_trainer, trainer_args) -> tuple:
    """Times `compiled` (A) and the same step traced with --paired_env set (B) alternately for
    `args.steps` pairs after a warm-up of each; returns ({both medians, every step time, the median of
    B/A}, A's latest state: the one passed in is donated)."""
    import jax

    name, sep, value = args.paired_env.partition("=")
    if not sep or not name:
        raise ValueError(f"--paired_env {args.paired_env!r} must be NAME=VALUE, e.g. GOPHER_JAX_ATTN_BF16=0")
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        other = build_trainer(*trainer_args)  # a fresh jit: traced again under the changed variable
        with other.context():
            state_b = other.init()
            compiled_b = other.train_step.lower(state_b, other.put_batch(next(batches))).compile()
    finally:
        if old is None:
            del os.environ[name]
        else:
            os.environ[name] = old
    times = {"A": [], "B": []}
    for i in range(args.steps + 1):
        for side in (("A", "B") if i % 2 == 0 else ("B", "A")):
            t = time.perf_counter()
            if side == "A":
                state, metrics = compiled(state, trainer.put_batch(next(batches)))
            else:
                state_b, metrics = compiled_b(state_b, other.put_batch(next(batches)))
            jax.block_until_ready(metrics)
            if i:  # the first pair warms up
                times[side].append(time.perf_counter() - t)
    return {"env_B": args.paired_env, "step_s_A": statistics.median(times["A"]),
            "step_s_B": statistics.median(times["B"]), "step_s_all_A": times["A"], "step_s_all_B": times["B"],
            "B_over_A": statistics.median(b / a for a, b in zip(times["A"], times["B"]))}, state


def run(args) -> dict:
    import jax

    from gopher_jax import gin_utils, host_memory
    from gopher_jax.kernels.build import host_description
    from gopher_jax.kernels.matmul_impl import decisions
    from gopher_jax.model.config import ModelConfig
    from gopher_jax.model.param_count import count_params
    from gopher_jax.parallel.mesh import MeshConfig, build_mesh
    from gopher_jax.parallel.rules import sharding_rules
    from gopher_jax.scaling import flops
    from gopher_jax.train.config import OptimizerConfig, TrainConfig
    from gopher_jax.train.sharded import build_trainer

    gin_utils.parse_gin(args.gin_file, [*args.gin_param, f"train.seq_len={args.seq_len}",
                                        f"train.batch_size={args.batch_size}"])
    model_cfg, train_cfg, opt_cfg = ModelConfig(), TrainConfig(), OptimizerConfig()
    result = {"gin_file": args.gin_file, "gin_param": args.gin_param, "seq_len": args.seq_len,
              "batch_size": args.batch_size, "data": args.data, "devices": 1,
              "jax": jax.__version__, "cpu_count": os.cpu_count(),
              "host_hugepages": host_memory.active(), "thp_mode": host_memory.thp_mode()}
    from host_info import host_info
    result.update(host=host_info(), dtype=model_cfg.dtype, matmul_impl=model_cfg.matmul_impl)
    result.update(host_description())
    result.update(measure_peaks(model_cfg.dtype) if not args.no_peak else
                  {"peak_gflops": float("nan"), "peak_gflops_bf16": float("nan")})

    mesh = build_mesh(MeshConfig(data=1, fsdp=1, tensor=1, pipeline=1), devices=jax.devices()[:1])
    trainer = build_trainer(model_cfg, opt_cfg, train_cfg, mesh, sharding_rules())
    make = synthetic_batches if args.data == "synthetic" else real_batches
    batches = iter(make(args.batch_size, args.seq_len, model_cfg.vocab_size))
    with trainer.context():
        state = trainer.init()
        batch = trainer.put_batch(next(batches))
        t = time.perf_counter()
        compiled = trainer.train_step.lower(state, batch).compile()
        result["compile_s"] = time.perf_counter() - t
        mem = compiled.memory_analysis()
        if mem is not None:
            result["compiled_temp_bytes"] = int(mem.temp_size_in_bytes)
            result["compiled_argument_bytes"] = int(mem.argument_size_in_bytes)
        state, metrics = compiled(state, batch)  # warm-up
        jax.block_until_ready(metrics)
        times, cpu_times = [], []
        for _ in range(args.steps):
            t, c = time.perf_counter(), time.process_time()
            batch = trainer.put_batch(next(batches))  # host input is part of the step time
            state, metrics = compiled(state, batch)
            jax.block_until_ready(metrics)
            times.append(time.perf_counter() - t)
            cpu_times.append(time.process_time() - c)
        if args.paired_env:
            result["paired"], state = paired_steps(args, trainer, compiled, state, batches, build_trainer,
                                                   (model_cfg, opt_cfg, train_cfg, mesh, sharding_rules()))
        if args.profile_dir:
            jax.profiler.start_trace(args.profile_dir)
            for _ in range(2):
                state, metrics = compiled(state, trainer.put_batch(next(batches)))
                jax.block_until_ready(metrics)
            jax.profiler.stop_trace()
            result["profile_op_s_per_step"] = op_seconds(args.profile_dir, compiled.as_text(), 2, top=8)
    tokens = args.batch_size * args.seq_len
    step_s = statistics.median(times)
    n = count_params(model_cfg)["total"]
    result.update(
        step_s=step_s, step_s_all=times, step_cpu_s=statistics.median(cpu_times), tokens_per_s=tokens / step_s,
        loss=float(metrics["loss"]), params=n,
        **{f"flops_per_token_{m}": flops.flops_per_token(model_cfg, args.seq_len, m) for m in flops.METHODS},
        **mfu_of(model_cfg, args.seq_len, tokens / step_s, result["peak_gflops"] * 1e9),
        peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        matmul_auto_decisions=decisions())
    return result


def main(argv=None) -> int:
    from gopher_jax.platforms import default_to_cpu
    default_to_cpu()  # before jax is imported: no libtpu noise on a host without a TPU
    args = parse_args(argv)
    if argv is None and args.host_hugepages == "auto":
        from gopher_jax.host_memory import reexec_with_hugepages
        reexec_with_hugepages([os.path.abspath(__file__), *sys.argv[1:]])
    if not args.gin_file:
        args.gin_file = ["gin_configs/models/gopher_44m.gin"]
    result = run(args)
    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in result.items()}, indent=1))
    if args.json:
        from gopher_jax.atomic_write import atomic_write
        atomic_write(args.json, lambda f: json.dump(result, f, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
