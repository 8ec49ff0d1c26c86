"""`gopher-jax train`: train the gin-configured model on a device mesh."""
from __future__ import annotations

import argparse
import os

from gopher_jax import gin_utils


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `gopher-jax train`."""
    gin_utils.add_gin_arguments(parser)
    parser.add_argument("--workdir", required=True, help="run directory: checkpoints, metrics, plots")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --workdir")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar (logs only)")
    # Multi-process runs (see gopher_jax/distributed.py): unset on TPU VMs, which configure themselves.
    parser.add_argument("--coordinator", default=None, help="host:port of process 0 (env GOPHER_JAX_COORDINATOR)")
    parser.add_argument("--num_processes", type=int, default=None, help="env GOPHER_JAX_NUM_PROCESSES")
    parser.add_argument("--process_id", type=int, default=None, help="env GOPHER_JAX_PROCESS_ID")


def run(args: argparse.Namespace) -> int:
    """Parses gin, trains, prints where the outputs are; returns 0."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from gopher_jax.distributed import maybe_initialize
    maybe_initialize(args.coordinator, args.num_processes, args.process_id)  # before any jax backend use
    # Import every configurable before gin parses (unknown names would be errors).
    import gopher_jax.data.input_pipeline  # noqa: F401
    import gopher_jax.model.config  # noqa: F401
    import gopher_jax.parallel.mesh  # noqa: F401
    import gopher_jax.parallel.rules  # noqa: F401
    import gopher_jax.train.config  # noqa: F401
    from gopher_jax.train.loop import train

    if not args.gin_file:
        args.gin_file = ["gin_configs/runs/pretrain.gin", "gin_configs/models/tiny.gin"]
    gin_utils.parse_gin(args.gin_file, args.gin_param)
    summary = train(args.workdir, resume=args.resume, progress=not args.no_progress)
    print(f"\ndone: step {summary['step']}, train loss {summary['final_loss']:.4f}, "
          f"held-out loss {summary['eval_loss']:.4f}")
    if summary.get("tokens_per_s"):
        print(f"throughput: {summary['tokens_per_s']:,.0f} tokens/s, MFU {summary['mfu']:.1%} "
              f"of the measured {summary['peak_flops'] / 1e9:.0f} GFLOP/s matmul peak")
    print(f"metrics:     {os.path.join(args.workdir, 'metrics.jsonl')} (TensorBoard: {args.workdir}/tensorboard)")
    if summary.get("loss_curve"):
        print(f"loss curve:  {summary['loss_curve']}")
    print(f"checkpoints: {summary['checkpoint_dir']}")
    return 0
