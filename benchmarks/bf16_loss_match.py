"""Mixed precision against fp32: the same run in ModelConfig.dtype="bfloat16" and "float32".

    python benchmarks/bf16_loss_match.py --steps 200 --json benchmarks/results/bf16_loss_match.json

Trains the tiny model (gin_configs/models/tiny.gin) from the same initialisation on the same batches
of the embedded corpus (the training input pipeline) twice, once per precision, with fp32 master
weights and optimizer state both times (only activations and matmul operands are bf16;
ModelConfig.matmul_impl=auto picks the GEMM per shape). Records both loss curves, the relative gap
of the final loss (mean of the last 10 steps, to average out per-batch noise; the goal is < 1%) and
each precision's median step time.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
TAIL = 10  # final loss = mean of the last TAIL steps


def train_curve(dtype: str, args) -> dict:
    """Returns {"loss": [...], "step_s": median seconds per step} for one precision."""
    import jax

    from gopher_jax import gin_utils
    from gopher_jax.model.config import ModelConfig
    from gopher_jax.parallel.mesh import MeshConfig, build_mesh
    from gopher_jax.parallel.rules import sharding_rules
    from gopher_jax.train.config import OptimizerConfig, TrainConfig
    from gopher_jax.train.sharded import build_trainer

    spec = importlib.util.spec_from_file_location("train_throughput", os.path.join(HERE, "train_throughput.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    gin_utils.parse_gin(args.gin_file, [*args.gin_param, f"train.seq_len={args.seq_len}",
                                        f"train.batch_size={args.batch_size}", f"train.steps={args.steps}",
                                        f'ModelConfig.dtype="{dtype}"'])
    model_cfg, train_cfg, opt_cfg = ModelConfig(), TrainConfig(), OptimizerConfig()
    mesh = build_mesh(MeshConfig(data=1, fsdp=1, tensor=1, pipeline=1), devices=jax.devices()[:1])
    trainer = build_trainer(model_cfg, opt_cfg, train_cfg, mesh, sharding_rules())
    batches = iter(bench.real_batches(args.batch_size, args.seq_len, model_cfg.vocab_size))
    losses, times = [], []
    with trainer.context():
        state = trainer.init()
        for _ in range(args.steps):
            t = time.perf_counter()
            state, metrics = trainer.train_step(state, trainer.put_batch(next(batches)))
            losses.append(float(metrics["loss"]))  # (blocks: the step time includes the whole step)
            times.append(time.perf_counter() - t)
    return {"loss": losses, "step_s": statistics.median(times[1:])}


def main(argv=None) -> int:
    from gopher_jax.platforms import default_to_cpu
    default_to_cpu()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gin_file", action="append", default=[])
    p.add_argument("--gin_param", action="append", default=[])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--seq_len", type=int, default=128)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--json", default="")
    args = p.parse_args(argv)
    args.gin_file = args.gin_file or ["gin_configs/models/tiny.gin"]
    from gopher_jax.kernels.build import host_description
    from host_info import host_info

    curves = {dtype: train_curve(dtype, args) for dtype in ("float32", "bfloat16")}
    final = {d: statistics.mean(c["loss"][-TAIL:]) for d, c in curves.items()}
    result = {"host": {**host_info(), **host_description()}, "gin_file": args.gin_file, "gin_param": args.gin_param,
              "steps": args.steps, "seq_len": args.seq_len, "batch_size": args.batch_size,
              "final_loss_definition": f"mean loss of the last {TAIL} steps",
              "final_loss_fp32": final["float32"], "final_loss_bf16": final["bfloat16"],
              "final_loss_rel_gap": abs(final["bfloat16"] - final["float32"]) / final["float32"],
              "step_s_fp32": curves["float32"]["step_s"], "step_s_bf16": curves["bfloat16"]["step_s"],
              "bf16_speedup": curves["float32"]["step_s"] / curves["bfloat16"]["step_s"],
              "loss_fp32": curves["float32"]["loss"], "loss_bf16": curves["bfloat16"]["loss"]}
    print(json.dumps({k: v for k, v in result.items() if not k.startswith("loss_")}, indent=1))
    if args.json:
        from gopher_jax.atomic_write import atomic_write
        atomic_write(args.json, lambda f: json.dump(result, f, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
