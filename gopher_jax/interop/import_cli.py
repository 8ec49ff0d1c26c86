"""`gopher-jax import`: a local Hugging Face Llama-family checkpoint -> a gopher-jax run directory."""
from __future__ import annotations

import argparse
import os
import sys

from gopher_jax import gin_utils


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `gopher-jax import`."""
    parser.add_argument("--hf_dir", required=True,
                        help="local transformers model directory (config.json + safetensors)")
    parser.add_argument("--workdir", required=True, help="new run directory to write config.gin + checkpoints/ to")
    parser.add_argument("--tokenizer", default=None,
                        help="SentencePiece .model to use (default: HF_DIR/tokenizer.model)")
    parser.add_argument("--mesh", default="data",
                        help="where the params are placed while importing: 'data' (all local devices), 'single', "
                             "'run' (the gin MeshConfig) or sizes such as 'data=2,fsdp=2,tensor=2'")
    gin_utils.add_gin_arguments(parser)  # run settings for a later `train --resume` (default runs/pretrain.gin)


def run(args: argparse.Namespace) -> int:
    """Imports; prints the commands that use the run. Returns 0, or 2 for a model it cannot import exactly."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import data_tasks  # noqa: F401 — its gin configurables, as `gopher-jax train` knows them
    from gopher_jax.interop.hf_mapping import UnsupportedArchitecture
    from gopher_jax.interop.import_hf import import_hf

    try:
        import_hf(args.hf_dir, args.workdir, mesh=args.mesh, gin_files=args.gin_file, gin_params=args.gin_param,
                  tokenizer=args.tokenizer)
    except (UnsupportedArchitecture, FileExistsError, FileNotFoundError) as e:
        print(f"gopher-jax import: {e}", file=sys.stderr)
        return 2
    w = args.workdir
    print(f"evaluate: gopher-jax eval --workdir={w} --task=lambada --data=lambada_openai.jsonl  "
          f"(docs/evaluation.md: each task's file)\n"
          f"sample:   gopher-jax sample --workdir={w} --prompt='...'\n"
          f"train on: gopher-jax train --gin_file={os.path.join(w, 'config.gin')} --workdir={w} --resume")
    return 0
