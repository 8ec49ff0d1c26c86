"""`gopher-jax eval`: score a checkpoint on a zero/few-shot task or on held-out text.

  gopher-jax eval --workdir RUN --task lambada --data lambada_openai.jsonl --limit 500 --json   # lm-eval's {"text"}
  gopher-jax eval --workdir RUN --task hellaswag --data_dir EVAL_DIR       # or GOPHER_JAX_EVAL_DIR=EVAL_DIR
  gopher-jax eval --workdir RUN --task text --data wikitext2/valid.txt --stride 128
  gopher-jax eval --workdir RUN --task seqio --seqio_task NAME [--split validation]
  gopher-jax eval --workdir RUN --task seqio --component books     # a component of the run's mixture (validation)
  gopher-jax eval --workdir RUN --task piqa --mesh data=2,fsdp=2,tensor=2   # default --mesh data: all local devices
"""
from __future__ import annotations

import argparse
import json
import sys
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `gopher-jax eval`."""
    from gopher_jax.eval.tasks import TASKS

    parser.add_argument("--workdir", required=True, help="training run directory (config.gin + checkpoints/)")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: newest)")
    parser.add_argument("--task", required=True, choices=sorted(TASKS) + ["text", "seqio"],
                        help="a zero/few-shot task, 'text' (bits-per-byte of a file) or 'seqio'")
    parser.add_argument("--data", default="",
                        help="the task's file, in its public release format (docs/evaluation.md lists each)")
    parser.add_argument("--data_dir", default="",
                        help="a directory holding the tasks' files under their default names (e.g. piqa.jsonl); "
                             "default: $GOPHER_JAX_EVAL_DIR")
    parser.add_argument("--shots", type=int, default=0, help="few-shot examples per prompt")
    parser.add_argument("--limit", type=int, default=0, help="evaluate only the first N documents (0 = all)")
    parser.add_argument("--seed", type=int, default=1234, help="seed of the few-shot example draw")
    parser.add_argument("--batch_size", type=int, default=16, help="sequences per forward pass")
    parser.add_argument("--stride", type=int, default=0,
                        help="text/seqio: new tokens per sliding window (default: the model's window)")
    parser.add_argument("--text_key", default="text", help="text/.jsonl: the field holding the document")
    parser.add_argument("--seqio_task", default="", help="seqio task or mixture name for --task seqio")
    parser.add_argument("--split", default=None, help="seqio split (default: validation if present)")
    parser.add_argument("--component", default="",
                        help="--task seqio: a component of the run's training mixture (e.g. books); scores its "
                             "validation split")
    parser.add_argument("--mesh", default="data",
                        help="devices to evaluate on: 'data' (default: every local device, data-parallel over "
                             "the batch, params sharded by the run's sharding rules), 'single' (one device), "
                             "'run' (the run's MeshConfig) or sizes such as 'data=2,fsdp=2,tensor=2'")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    """Evaluates and prints the metrics; returns 0 (2 on a bad flag or missing file)."""
    from gopher_jax.eval import checkpoint_loader, perplexity
    from gopher_jax.eval.scorer import Scorer
    from gopher_jax.eval.tasks import TASKS, evaluate_docs, load_docs
    from gopher_jax.eval.text_lm import TextLM

    try:  # a missing or malformed task file fails before the checkpoint is loaded
        docs = load_docs(args.task, args.data, args.data_dir, args.limit) if args.task in TASKS else None
    except (FileNotFoundError, ValueError) as e:
        print(f"gopher-jax eval: {e}", file=sys.stderr)
        return 2
    try:
        loaded = checkpoint_loader.load(args.workdir, args.step, mesh=args.mesh)
    except (FileNotFoundError, RuntimeError, ValueError) as e:
        print(f"gopher-jax eval: {e}", file=sys.stderr)
        return 2
    scorer = Scorer.for_loaded(loaded, batch_size=args.batch_size)
    lm = TextLM(scorer, loaded.tokenizer)
    start = time.perf_counter()
    try:
        if args.task == "text":
            if not args.data:
                raise FileNotFoundError("--task text needs --data FILE (.txt or .jsonl)")
            metrics = perplexity.evaluate_text(lm, args.data, args.stride or None, args.text_key, args.limit)
        elif args.task == "seqio":
            task, split = _seqio_task(loaded, args)
            docs = perplexity.seqio_documents(task, split, args.limit)
            metrics = perplexity.evaluate_documents(scorer, docs, lm.prefix_id, args.stride or None)
        else:
            metrics = evaluate_docs(args.task, lm, docs, args.shots, args.seed)
    except (FileNotFoundError, ValueError) as e:
        print(f"gopher-jax eval: {e}", file=sys.stderr)
        return 2
    wall = time.perf_counter() - start
    mesh = dict(loaded.mesh.shape) if loaded.mesh is not None else {"single_device": 1}
    out = {"task": args.task, "step": loaded.step, "shots": args.shots, **metrics, "mesh": mesh,
           "batch_size": scorer.batch_size,
           "wall_s": round(wall, 2), "tokens_scored": scorer.tokens_scored,
           "tokens_per_s": round(scorer.tokens_scored / scorer.seconds, 1) if scorer.seconds else 0.0}
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:>16}: {v:.4f}" if isinstance(v, float) else f"{k:>16}: {v}")
    return 0


def _seqio_task(loaded, args) -> tuple[str, str | None]:
    """Registers the run's data (its config.gin is parsed) and returns (task, split) to score."""
    import data_tasks  # the command, not the library, imports the registrations
    from gopher_jax.data.training_data import component_names, mixture_tasks
    from gopher_jax.train.config import TrainConfig

    name = data_tasks.register_for_training(loaded.tokenizer_path, TrainConfig().train_task, verbose=False)
    if args.component:
        short = {v: k for k, v in component_names([t for t, _ in mixture_tasks(name)]).items()}
        if args.component not in short:
            raise ValueError(f"--component={args.component!r} is not in the run's mixture {name!r}; "
                             f"it has {sorted(short)}")
        return short[args.component], args.split or "validation"
    if not args.seqio_task:
        raise FileNotFoundError("--task seqio needs --seqio_task NAME (a registered seqio task) or --component NAME")
    return args.seqio_task, args.split
