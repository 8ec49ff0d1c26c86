"""Our train step against a Hugging Face GPT-2 + torch.compile of the same shape, interleaved.

    python benchmarks/compare_pytorch.py --rounds 3 --json benchmarks/results/compare_pytorch.json \
        [--torch_python /path/to/venv-with-torch/bin/python] [--reprobe]

PyTorch is not a dependency of gopher_jax: install `torch transformers` in any interpreter and pass
it as --torch_python (default: this one). Each round runs our benchmark (train_throughput.py, the
gopher_44m model at seq 512, batch 8 unless overridden) and then the torch reference
(torch_gpt2_reference.py) in fresh processes, in both precisions: ours in fp32 and with
ModelConfig.dtype="bfloat16" (fp32 master weights, bf16 matmuls on the host's bf16 units where
ModelConfig.matmul_impl=auto finds them faster), torch.compile in fp32 and under autocast-bf16,
alternating ours/torch, so all four see the same machine state. `ratio` is median(ours-best) /
median(torch-best) over the rounds, `ratio_paired` the median of per-round ratios; the JSON records
the CPU model and its matmul flags (AMX, AVX512-BF16) and what matmul_impl=auto picked and why.
The shapes match: 8 layers, d_model 512, 16 heads x 32, MLP 2048, vocab 32,000 tied, AdamW.
Architectures differ as the projects do: ours is Gopher's (RMSNorm, Transformer-XL relative
attention, no biases); add `--gin_param=ModelConfig.position="learned"` for GPT-2's positions.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def run_json(cmd: list[str], env: dict) -> dict:
    """Runs a benchmark process and returns the JSON object it printed last."""
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    out = proc.stdout
    return json.loads(out[out.rfind("\n{") + 1:])  # the last top-level object (-1 + 1 = 0 if first)


def model_shape(gin_files: list[str], gin_params: list[str]) -> dict:
    """Returns the sizes the GPT-2 peer needs from our gin config (parsed here: gin only, no jax)."""
    from gopher_jax import gin_utils
    from gopher_jax.model.config import ModelConfig

    gin_utils.parse_gin(gin_files, gin_params)
    c = ModelConfig()
    return dict(layers=c.num_layers, d_model=c.d_model, heads=c.num_heads, d_ff=c.ffw_dim, vocab=c.vocab_size,
                head_dim=c.head_dim)


def best_of(entry: dict, side: str) -> float:
    """Returns the higher tokens/s of `side`'s fp32 and bf16 runs in one round."""
    return max(entry[f"{side}_fp32"]["tokens_per_s"], entry[f"{side}_bf16"]["tokens_per_s"])


def ceiling(result: dict, rounds: list[dict]) -> dict:
    """The most tokens/s any implementation of this step could reach here: the model's FLOPs per
    token (`model_causal`: causal attention counted once, no recompute) all at the host's measured
    bf16 matmul peak (the faster unit). Also what the 1.2x-torch.compile-best goal would need."""
    import statistics

    peak = statistics.median(e["ours_bf16"]["peak_gflops_bf16"] for e in rounds) * 1e9
    per_token = rounds[0]["ours_bf16"]["flops_per_token_model_causal"]
    tokens = rounds[0]["ours_bf16"]["batch_size"] * rounds[0]["ours_bf16"]["seq_len"]
    best = peak / per_token
    goal = 1.2 * result["torch_compile_tokens_per_s"]
    return {"peak_gflops_bf16": peak / 1e9, "flops_per_token": per_token, "flops_per_step": per_token * tokens,
            "min_step_s": per_token * tokens / peak, "max_tokens_per_s": best,
            "goal_tokens_per_s": goal, "goal_step_s": tokens / goal, "goal_mfu_of_ceiling": goal / best,
            "ours_best_mfu_of_ceiling": result["ours_tokens_per_s"] / best,
            "torch_best_mfu_of_ceiling": result["torch_compile_tokens_per_s"] / best}


def summarise(rounds: list[dict], variants: dict, args, shape: dict, gin_files: list[str], env: dict) -> dict:
    """Returns the result JSON of the rounds run so far (medians, ratios, host, auto's GEMM picks)."""
    from gopher_jax import host_memory
    from gopher_jax.kernels.build import host_description
    from host_info import host_info

    def med(impl, key):
        return statistics.median(e[impl][key] for e in rounds)

    best_ours = max(("ours_fp32", "ours_bf16"), key=lambda n: med(n, "tokens_per_s"))
    best_torch = max(("torch_compile_fp32", "torch_compile_bf16"), key=lambda n: med(n, "tokens_per_s"))
    peak = med(best_ours, "peak_gflops") * 1e9
    result = {"host": {**host_info(), **host_description()}, "shape": shape, "seq_len": args.seq_len,
              "batch_size": args.batch_size, "gin_file": gin_files, "gin_param": args.gin_param,
              "rounds": rounds, "variants": {n: " ".join(c) for n, c in variants.items()},
              # The headline keys (rendered into README.md): each side's faster precision.
              "ours_best": best_ours, "torch_compile_best": best_torch, "peak_gflops": peak / 1e9,
              "peak_source": rounds[0][best_ours]["peak_source"],
              "ours_tokens_per_s": med(best_ours, "tokens_per_s"), "ours_mfu": med(best_ours, "mfu"),
              "ours_mfu_count": rounds[0][best_ours]["mfu_count"], "ours_mfu_6n": med(best_ours, "mfu_6n"),
              "ours_compile_s": med(best_ours, "compile_s"),
              "torch_compile_tokens_per_s": med(best_torch, "tokens_per_s"),
              "torch_compile_s": med(best_torch, "compile_s"),
              "matmul_auto_decisions": {n: rounds[-1][n].get("matmul_auto_decisions") for n in ("ours_fp32", "ours_bf16")}}
    for n in variants:
        result[f"{n}_tokens_per_s"] = med(n, "tokens_per_s")
    for n in ("ours_fp32", "ours_bf16"):  # each precision against its own precision's peak
        result[f"{n}_mfu"] = med(n, "mfu")
        result[f"{n}_peak_gflops"] = med(n, "peak_gflops")
    torch_n = rounds[0]["torch_compile_fp32"]["params"]
    result["torch_compile_mfu_6n"] = 6.0 * torch_n * result["torch_compile_tokens_per_s"] / peak
    # Each side against its own BLAS in the precision it ran: on some CPUs (e.g. MKL on AMD) torch's
    # matmul peak is far below XLA's, and then the tokens/s ratio says more about the BLAS than the step.
    result["torch_peak_gflops"] = med(best_torch, "peak_gflops")
    result["torch_compile_mfu_6n_own_peak"] = (6.0 * torch_n * result["torch_compile_tokens_per_s"]
                                               / (result["torch_peak_gflops"] * 1e9))
    result["host_hugepages"] = rounds[0]["ours_fp32"].get("host_hugepages")
    result["torch_host_hugepages"] = host_memory.active(env)
    # ratio: median(ours-best) / median(torch-best); ratio_paired: the median of per-round ratios
    # (each round's four runs share the machine's load: the steadier figure on a busy host).
    result["ratio"] = result["ours_tokens_per_s"] / result["torch_compile_tokens_per_s"]
    result["ratio_paired"] = statistics.median(e["ratio_best"] for e in rounds)
    result["ours_bf16_over_fp32"] = statistics.median(
        e["ours_bf16"]["tokens_per_s"] / e["ours_fp32"]["tokens_per_s"] for e in rounds)
    result["torch_bf16_over_fp32"] = statistics.median(
        e["torch_compile_bf16"]["tokens_per_s"] / e["torch_compile_fp32"]["tokens_per_s"] for e in rounds)
    result["ceiling"] = ceiling(result, rounds)
    if args.eager:
        result["torch_eager_tokens_per_s"] = med("torch_eager_fp32", "tokens_per_s")
        result["ratio_vs_eager"] = result["ours_tokens_per_s"] / result["torch_eager_tokens_per_s"]
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=4, help="timed steps per process (after one warm-up/compile step)")
    p.add_argument("--gin_file", action="append", default=[])
    p.add_argument("--gin_param", action="append", default=[])
    p.add_argument("--seq_len", type=int, default=512)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--torch_python", default=sys.executable, help="interpreter with torch + transformers")
    p.add_argument("--eager", action="store_true", help="also time torch without torch.compile")
    p.add_argument("--reprobe", action="store_true",
                   help="first time matmul_impl=auto's GEMM candidates again for both precisions "
                        "(GOPHER_JAX_MATMUL_REPROBE=1, one untimed run each), so every round uses decisions "
                        "measured on the machine as it is now rather than the host's cached ones")
    p.add_argument("--json", default="")
    p.add_argument("--host_hugepages", choices=("auto", "off"), default="auto",
                   help="our side only: auto runs it under glibc.malloc.hugetlb=1 when the host supports it, "
                        "as `gopher-jax` runs itself (gopher_jax/host_memory.py); off: without. The torch side "
                        "always runs in the environment given (on the Zen 5 dev VM the tunable slowed it "
                        "from ~610 to ~550 tokens/s, so the peer keeps its faster setting)")
    args = p.parse_args(argv)
    from gopher_jax.platforms import default_to_cpu
    default_to_cpu()  # this process imports jax for the model's shape: no libtpu noise without a TPU
    gin_files = args.gin_file or ["gin_configs/models/gopher_44m.gin"]

    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.setdefault("JAX_PLATFORMS", "cpu")
    ours_cmd = [sys.executable, os.path.join(HERE, "train_throughput.py"), f"--seq_len={args.seq_len}",
                f"--batch_size={args.batch_size}", f"--steps={args.steps}", f"--host_hugepages={args.host_hugepages}",
                *[f"--gin_file={f}" for f in gin_files], *[f"--gin_param={g}" for g in args.gin_param]]
    shape = model_shape(gin_files, args.gin_param)  # the peer always matches our config
    if shape["heads"] * shape["head_dim"] != shape["d_model"]:
        print(f"note: heads x head_dim = {shape['heads'] * shape['head_dim']} != d_model {shape['d_model']}; "
              f"GPT-2 ties them, so its attention width differs", file=sys.stderr)
    torch_cmd = [args.torch_python, os.path.join(HERE, "torch_gpt2_reference.py"),
                 *[f"--{k}={shape[k]}" for k in ("layers", "d_model", "heads", "d_ff", "vocab")],
                 f"--seq_len={args.seq_len}", f"--batch_size={args.batch_size}", f"--steps={args.steps}"]

    # Both precisions on both sides: ours with ModelConfig.dtype (fp32 master weights either way),
    # torch with and without autocast-bf16. Each round runs all four back to back, in an order that
    # alternates ours/torch and reverses every other round, so every pair shares the machine's state.
    variants = {"ours_fp32": ours_cmd + ['--gin_param=ModelConfig.dtype="float32"'],
                "torch_compile_fp32": torch_cmd,
                "ours_bf16": ours_cmd + ['--gin_param=ModelConfig.dtype="bfloat16"'],
                "torch_compile_bf16": torch_cmd + ["--bf16"]}
    if args.eager:
        variants["torch_eager_fp32"] = torch_cmd + ["--eager"]
    reprobed = []
    if args.reprobe:
        for name in ("ours_fp32", "ours_bf16"):
            cmd = [c if not c.startswith("--steps=") else "--steps=1" for c in variants[name]] + ["--no_peak"]
            reprobed.append(run_json(cmd, {**env, "GOPHER_JAX_MATMUL_REPROBE": "1"})["matmul_auto_decisions"])
    rounds = []
    result = {}
    for r in range(args.rounds):
        order = list(variants) if r % 2 == 0 else list(reversed(variants))
        entry = {name: run_json(variants[name], env) for name in order}
        entry["ratio_best"] = best_of(entry, "ours") / best_of(entry, "torch_compile")
        rounds.append(entry)
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{n} {entry[n]['tokens_per_s']:.0f}" for n in variants)
              + f" tok/s; ours-best / torch.compile-best {entry['ratio_best']:.2f}", flush=True)
        result = summarise(rounds, variants, args, shape, gin_files, env)
        result["reprobed_before_round_1"] = bool(reprobed)
        if args.json:  # after every round: a run cut short still leaves its finished rounds
            from gopher_jax.atomic_write import atomic_write
            atomic_write(args.json, lambda f: json.dump(result, f, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "rounds"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
