"""Reading a training run for export: its gin bindings, configs, tokenizer and checkpoint steps."""
from __future__ import annotations

import os


def parse_run(workdir: str):
    """Parses `workdir/config.gin`; returns (ModelConfig, TrainConfig) it describes.

    Only those two are needed, so bindings of other configurables (data, mesh, optimizer) are
    skipped rather than imported: export never loads TensorFlow or the input pipeline.
    """
    import gin

    from gopher_jax.model.config import ModelConfig
    from gopher_jax.train.config import TrainConfig

    path = os.path.join(workdir, "config.gin")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: --workdir={workdir!r} is not a gopher-jax run (train and "
                                f"import write config.gin there); pass the --workdir you trained or imported into")
    gin.clear_config()
    try:
        gin.parse_config_files_and_bindings([path], [], skip_unknown=True, finalize_config=False)
    except (ValueError, KeyError) as e:
        raise ValueError(f"bad gin configuration in {path} ({e})") from e
    return ModelConfig(), TrainConfig()


def tokenizer_path(model_config, train_config) -> str:
    """Returns the SentencePiece .model the run trained with (the embedded one when none was set)."""
    from gopher_jax.data import tokenizer as tok

    return train_config.tokenizer or tok.ensure_embedded_tokenizer(model_config.vocab_size)


def checkpoint_step(checkpointer, step: int | None) -> int:
    """Returns `step` if the run has it (default: the newest), else raises FileNotFoundError listing steps."""
    steps = sorted(checkpointer.manager.all_steps())
    if not steps:
        raise FileNotFoundError(f"{checkpointer.directory} holds no complete checkpoint; train until one is saved")
    if step is None:
        return steps[-1]
    if step not in steps:
        raise FileNotFoundError(f"no checkpoint for step {step} in {checkpointer.directory}; available: {steps}")
    return step
