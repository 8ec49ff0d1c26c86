"""The `gopher-jax` command line: one table of commands, each implemented in its own module.

Every command module exposes `add_arguments(parser)` and `run(args) -> int`. Modules are
imported only when their command runs, so `gopher-jax scaling ...` never pays for importing
TensorFlow and `gopher-jax --help` answers instantly.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# command words -> (module, one-line help). Sub-commands are written with a space.
COMMANDS: dict[str, tuple[str, str]] = {
    "params": ("gopher_jax.model.params_report", "parameter counts and shapes of a gin model config"),
    "train": ("gopher_jax.train.cli", "train a model on a device mesh (gin-configured)"),
    "data train-tokenizer": ("gopher_jax.data.tokenizer_cli", "train a SentencePiece tokenizer"),
    "data process": ("gopher_jax.data.process_cli", "filter, dedup and decontaminate a jsonl corpus"),
    "data pack": ("gopher_jax.data.pack_cli", "tokenize and pack processed components into a packed-data root"),
    "data build-scaling-corpus": ("gopher_jax.data.scaling_corpus_cli", "build the IsoFLOP sweep's byte-level corpus (>= 50M tokens) from installed packages"),
    "scaling fit": ("gopher_jax.scaling.fit_cli", "fit Kaplan / Chinchilla scaling laws to runs"),
    "scaling optimal": ("gopher_jax.scaling.optimal_cli", "compute-optimal N and D for a FLOP budget"),
    "scaling sweep": ("gopher_jax.scaling.sweep_cli", "generate and run an IsoFLOP sweep"),
    "scaling reproduce": ("gopher_jax.scaling.reproduce_cli",
                          "Chinchilla's IsoFLOP study from our own runs: corpus, sweep, fits 1-3, report"),
    "scaling flops": ("gopher_jax.scaling.flops_cli", "parameters and FLOPs (Chinchilla App. F, 6ND) of a gin model"),
    "scaling plot": ("gopher_jax.scaling.plot_cli", "Chinchilla Figs. 2-4 style plots from runs and fits"),
    "eval": ("gopher_jax.eval.cli", "evaluate a checkpoint: bits-per-byte, zero/few-shot tasks"),
    "sample": ("gopher_jax.sample_cli", "sample from a checkpoint with a KV cache"),
    "export": ("gopher_jax.interop.export_cli", "write a checkpoint as a Hugging Face transformers model"),
    "import": ("gopher_jax.interop.import_cli", "read a local Hugging Face Llama-family model into a run"),
    "plan": ("gopher_jax.plan.plan_cli", "analytic memory/throughput plan for a TPU topology"),
    "compile": ("gopher_jax.plan.compile_cli", "ahead-of-time compile for a TPU topology"),
    "sweep": ("gopher_jax.sweep.sweep_cli", "run a grid of gin overrides x seeds on N workers (leases, resume)"),
    "compare": ("gopher_jax.sweep.compare_cli", "compare a sweep's arms: CIs, paired tests, plots, results.jsonl"),
}


def _usage() -> str:
    width = max(len(c) for c in COMMANDS)
    lines = ["usage: gopher-jax COMMAND [options]   (gopher-jax COMMAND --help for its options)", "", "commands:"]
    lines += [f"  {cmd:<{width}}  {help_}" for cmd, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def _match(argv: list[str]) -> tuple[str | None, list[str]]:
    """Returns the longest command that prefixes argv, and the remaining arguments."""
    for n in (2, 1):
        words = " ".join(argv[:n])
        if len(argv) >= n and words in COMMANDS:
            return words, argv[n:]
    return None, argv


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `gopher-jax` console script; returns the process exit code.

    Run as the console script (argv None), a command first restarts itself with transparent huge
    pages for XLA's buffers when the host supports them (gopher_jax/host_memory.py). Without a TPU
    or GPU attached, and unless JAX_PLATFORMS is set, commands run on CPU (gopher_jax/platforms.py).
    """
    from_console = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    # Before any command imports jax: no libtpu initialisation noise on hosts without a TPU.
    from gopher_jax.platforms import default_to_cpu
    default_to_cpu()
    command, rest = _match(argv)
    if command is not None and from_console:
        from gopher_jax.host_memory import reexec_with_hugepages
        reexec_with_hugepages(["-m", "gopher_jax.cli", *argv])
    if command is None:
        if argv and argv[0] not in ("-h", "--help"):
            print(f"gopher-jax: unknown command {' '.join(argv[:2])!r}\n", file=sys.stderr)
            print(_usage(), file=sys.stderr)
            return 2
        print(_usage())
        return 0
    module_name, help_ = COMMANDS[command]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name):
            print(f"gopher-jax {command}: not implemented in this version ({module_name} is missing)",
                  file=sys.stderr)
            return 2
        raise
    parser = argparse.ArgumentParser(prog=f"gopher-jax {command}", description=help_)
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
