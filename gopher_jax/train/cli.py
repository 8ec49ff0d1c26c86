"""`gopher-jax train`: train the gin-configured model on a device mesh."""
from __future__ import annotations

import argparse
import os
import sys

from gopher_jax import gin_utils


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `gopher-jax train`."""
    gin_utils.add_gin_arguments(parser)
    parser.add_argument("--workdir", required=True, help="run directory: checkpoints, metrics, plots")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --workdir")
    start.add_argument("--restart_from_scratch", action="store_true",
                       help="train from step 0 in a --workdir that holds checkpoints; they are moved to "
                            "checkpoints_superseded/<time>/, never deleted (docs/reliability.md)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar (logs only)")
    # Multi-process runs (see gopher_jax/distributed.py): unset on TPU VMs, which configure themselves.
    parser.add_argument("--coordinator", default=None, help="host:port of process 0 (env GOPHER_JAX_COORDINATOR)")
    parser.add_argument("--num_processes", type=int, default=None, help="env GOPHER_JAX_NUM_PROCESSES")
    parser.add_argument("--process_id", type=int, default=None, help="env GOPHER_JAX_PROCESS_ID")


def import_configurables() -> None:
    """Imports every module whose gin configurables a `gopher-jax train` config may bind.

    The sweep validates its arms with the same list (gopher_jax/sweep/validate_arms.py)."""
    import data_tasks  # noqa: F401  (registrations and their configurables: the command imports them, not the library)
    import gopher_jax.data.input_pipeline  # noqa: F401
    import gopher_jax.data.training_data  # noqa: F401
    import gopher_jax.model.config  # noqa: F401
    import gopher_jax.parallel.mesh  # noqa: F401
    import gopher_jax.parallel.rules  # noqa: F401
    import gopher_jax.train.checkpoint_errors  # noqa: F401  (checkpoint_restore.*)
    import gopher_jax.train.config  # noqa: F401
    import gopher_jax.train.loop  # noqa: F401  (faults.* and the loop's other configurables)


def run(args: argparse.Namespace) -> int:
    """Parses gin, trains, prints where the outputs are; returns 0."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from gopher_jax.distributed import maybe_initialize
    maybe_initialize(args.coordinator, args.num_processes, args.process_id)  # before any jax backend use
    import_configurables()  # before gin parses: unknown names would be errors
    import data_tasks
    from gopher_jax.train.checkpoint_errors import CheckpointError
    from gopher_jax.train.loop import resolve_tokenizer, train

    if not args.gin_file:
        args.gin_file = ["gin_configs/runs/pretrain.gin", "gin_configs/models/tiny.gin"]
    gin_utils.parse_gin(args.gin_file, args.gin_param)
    import jax
    from gopher_jax.train.config import TrainConfig
    vocab_path, _ = resolve_tokenizer()
    train_task = data_tasks.register_for_training(vocab_path, TrainConfig().train_task,
                                                  verbose=jax.process_index() == 0)
    try:
        summary = train(args.workdir, resume=args.resume, progress=not args.no_progress, train_task=train_task,
                        restart_from_scratch=args.restart_from_scratch)
    except CheckpointError as e:  # the message says what was kept and what to do; no traceback
        print(f"gopher-jax train: {e}", file=sys.stderr, flush=True)
        return 1
    if summary.get("final_loss") is None:  # resumed at train.steps: no step ran, no loss to print
        print(f"\ndone: the run had already reached step {summary['step']} (train.steps); nothing left to train")
        return 0
    print(f"\ndone: step {summary['step']}, train loss {summary['final_loss']:.4f}, held-out loss "
          f"{summary['eval_loss']:.4f}, {summary['eval_bits_per_byte']:.4f} bits/byte (mixture-weighted)")
    print(_component_table(summary))
    if summary.get("tokens_per_s"):
        print(f"throughput: {summary['tokens_per_s']:,.0f} tokens/s, MFU {summary['mfu']:.1%} "
              f"({summary['mfu_count']} FLOPs; {summary['mfu_6n']:.1%} by 6N) of a {summary['peak_flops'] / 1e9:,.0f} "
              f"GFLOP/s peak ({summary['peak_source']})")
    if summary.get("goodput"):
        from gopher_jax.train.goodput import format_table
        print(format_table(summary["goodput"]))
    print(f"metrics:     {os.path.join(args.workdir, 'metrics.jsonl')} (TensorBoard: {args.workdir}/tensorboard)")
    if summary.get("loss_curve"):
        print(f"loss curve:  {summary['loss_curve']}")
    print(f"checkpoints: {summary['checkpoint_dir']}")
    return 0


def _component_table(summary: dict) -> str:
    """Returns the per-component table: target and realised share, epochs, held-out loss and bits/byte."""
    lines = [f"  {'component':<12}{'target':>8}{'realised':>10}{'epochs':>8}{'eval loss':>11}{'bits/byte':>11}"]
    ev = summary.get("eval", {})
    for name, m in summary.get("mixture", {}).items():
        loss, bpb = ev.get(f"eval_loss/{name}"), ev.get(f"eval_bits_per_byte/{name}")
        lines.append(f"  {name:<12}{m['target']:>8.4f}{m['realised']:>10.4f}{m['epochs']:>8.2f}"
                     + (f"{loss:>11.4f}{bpb:>11.4f}" if loss is not None else f"{'-':>11}{'-':>11}"))
    return "\n".join(lines)
