"""Load (ModelConfig, params, tokenizer) from a training run's workdir, for eval and sampling.

The run's `config.gin` holds every binding it trained with; we parse it, rebuild the abstract
train state the checkpoint was saved from, and restore it onto one device (default) or a mesh.
"""
from __future__ import annotations

import dataclasses
import os

import jax


@dataclasses.dataclass
class LoadedModel:
    """What eval and sampling need from a run."""

    config: object  # ModelConfig
    params: dict
    tokenizer: object  # sentencepiece.SentencePieceProcessor
    step: int
    workdir: str


def _parse_run_gin(workdir: str):
    from gopher_jax import gin_utils
    import gopher_jax.train.loop  # noqa: F401 — registers every configurable config.gin may bind

    path = os.path.join(workdir, "config.gin")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: --workdir={workdir!r} is not a gopher-jax training run "
                                f"(train writes config.gin there first); pass the --workdir you trained with")
    gin_utils.parse_gin([path])


def load(workdir: str, step: int | None = None, mesh=None, rules=None) -> LoadedModel:
    """Returns the LoadedModel of `step` (default: newest) of the run in `workdir`.

    Params land on the first device unless `mesh` (and logical-axis `rules`) are given, in which
    case they are sharded as in training. Only params are returned; the optimizer state is
    restored alongside (orbax restores the saved tree) and dropped.
    """
    from jax.sharding import SingleDeviceSharding

    from gopher_jax.data import tokenizer as tok
    from gopher_jax.model.config import ModelConfig
    from gopher_jax.train.checkpoints import Checkpointer
    from gopher_jax.train.config import OptimizerConfig, TrainConfig
    from gopher_jax.train.optimizer import make_optimizer
    from gopher_jax.train.spikes import maybe_guard
    from gopher_jax.train.state import abstract_params, make_init_fn, state_shardings

    workdir = os.path.abspath(workdir)
    _parse_run_gin(workdir)
    model_cfg, train_cfg, opt_cfg = ModelConfig(), TrainConfig(), OptimizerConfig()
    ckpt_dir = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(ckpt_dir):
        raise FileNotFoundError(f"no checkpoints/ in {workdir}: the run saved none yet (train.checkpoint_every "
                                f"steps, and always at the end); train longer or pick another --workdir")
    ckpt = Checkpointer(workdir, async_save=False)
    steps = sorted(ckpt.manager.all_steps())
    if not steps:
        raise FileNotFoundError(f"{ckpt_dir} holds no complete checkpoint; train until one is saved")
    if step is None:
        step = steps[-1]
    elif step not in steps:
        raise FileNotFoundError(f"no checkpoint for step {step} in {ckpt_dir}; available steps: {steps}")

    boxed = abstract_params(model_cfg, train_cfg.seq_len)
    tx = maybe_guard(make_optimizer(opt_cfg, train_cfg.steps, boxed), train_cfg)
    abstract = jax.eval_shape(make_init_fn(model_cfg, tx, train_cfg.seq_len), jax.random.key(0))
    if mesh is None:
        one = SingleDeviceSharding(jax.devices()[0])
        shardings = jax.tree.map(lambda _: one, abstract)
    else:
        shardings = state_shardings(abstract, boxed, tx, mesh, rules)
    try:
        state, _ = ckpt.restore(step, abstract, shardings)
    except Exception as e:  # noqa: BLE001 — re-raised with the run and step named
        raise RuntimeError(f"could not restore step {step} from {ckpt_dir} ({type(e).__name__}: {e}); the "
                           f"checkpoint may be partial or from a different config.gin — try another --step") from e
    finally:
        ckpt.manager.close()
    path = train_cfg.tokenizer or tok.ensure_embedded_tokenizer(model_cfg.vocab_size)
    return LoadedModel(model_cfg, state.params, tok.load(path), int(step), workdir)
