"""`gopher-jax export`: write a run's checkpoint as a Hugging Face transformers model directory."""
from __future__ import annotations

import argparse
import os
import sys

FORMATS = ("hf",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `gopher-jax export`."""
    parser.add_argument("--workdir", required=True, help="training run directory (config.gin + checkpoints/)")
    parser.add_argument("--format", default="hf", choices=FORMATS,
                        help="hf: config.json + safetensors + tokenizer for transformers' AutoModelForCausalLM")
    parser.add_argument("--out", required=True, help="output directory (new or empty)")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: newest)")
    parser.add_argument("--max_shard_gb", type=float, default=5.0,
                        help="largest safetensors file in GiB; bigger models get model-0000k-of-0000n files + index")


def run(args: argparse.Namespace) -> int:
    """Exports; prints what was written. Returns 0, or 2 for a model with no exact HF class."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from gopher_jax.interop.export import export_hf
    from gopher_jax.interop.hf_mapping import UnsupportedArchitecture

    try:
        export_hf(args.workdir, args.out, step=args.step, max_shard_bytes=int(args.max_shard_gb * 2**30))
    except (UnsupportedArchitecture, FileExistsError, FileNotFoundError) as e:
        print(f"gopher-jax export: {e}", file=sys.stderr)
        return 2
    print(f"load it with: AutoModelForCausalLM.from_pretrained({args.out!r}) and "
          f"AutoTokenizer.from_pretrained({args.out!r})")
    return 0
