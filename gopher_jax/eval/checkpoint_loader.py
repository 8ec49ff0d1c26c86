"""Load (ModelConfig, params, tokenizer) from a training run's workdir, for eval and sampling.

The run's `config.gin` holds every binding it trained with; we parse it, rebuild the abstract
params the checkpoint holds, and restore only those (a partial orbax restore) onto one device or a mesh.
"""
from __future__ import annotations

import dataclasses
import os

import flax.linen as nn
import jax


@dataclasses.dataclass
class LoadedModel:
    """What eval and sampling need from a run."""

    config: object  # ModelConfig
    params: dict
    tokenizer: object  # sentencepiece.SentencePieceProcessor
    step: int
    workdir: str
    mesh: object = None  # jax.sharding.Mesh the params are sharded on (None: one device)
    rules: tuple | None = None  # the logical-axis rules table they were sharded with
    param_shardings: object = None  # NamedSharding tree matching params (None on one device)
    tokenizer_path: str = ""  # the SentencePiece .model file the run trained with


def _parse_run_gin(workdir: str):
    from gopher_jax import gin_utils
    import gopher_jax.train.loop  # noqa: F401 — registers every configurable config.gin may bind

    path = os.path.join(workdir, "config.gin")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: --workdir={workdir!r} is not a gopher-jax training run "
                                f"(train writes config.gin there first); pass the --workdir you trained with")
    gin_utils.parse_gin([path])


def parse_mesh(spec: str | None):
    """Returns the eval MeshConfig for a `--mesh` value, or None for one device.

    "single" (or "1", "none"): one device, no mesh. "data" (default): every local device
    data-parallel over the batch. "run": the MeshConfig the run trained with (its config.gin,
    parsed first). "data=2,fsdp=2,tensor=2": explicit MeshConfig sizes (one may be -1).
    """
    from gopher_jax.parallel.mesh import MESH_AXES, MeshConfig

    spec = (spec or "data").strip()
    if spec in ("single", "1", "none", ""):
        return None
    if spec == "data":
        return MeshConfig(data=-1, fsdp=1, tensor=1, pipeline=1)
    if spec == "run":
        return MeshConfig()
    sizes = {}
    for part in spec.split(","):
        name, _, value = part.partition("=")
        if name.strip() not in MESH_AXES or not value.strip().lstrip("-").isdigit():
            raise ValueError(f"--mesh={spec!r}: expected 'single', 'data', 'run' or sizes such as "
                             f"'data=2,fsdp=2,tensor=2' over the axes {MESH_AXES}")
        sizes[name.strip()] = int(value)
    return MeshConfig(**{"data": 1, "fsdp": 1, "tensor": 1, "pipeline": 1, **sizes})


def load(workdir: str, step: int | None = None, mesh=None, rules=None) -> LoadedModel:
    """Returns the LoadedModel of `step` (default: newest) of the run in `workdir`.

    Params land on the first device unless `mesh` is given: a jax Mesh, a MeshConfig, or a
    `--mesh` string (`parse_mesh`, built over the local devices with the train command's
    `build_mesh`); they are then sharded with `rules` (default: the run's `sharding_rules`
    from its config.gin) exactly as in training. Only the params subtree is read from the
    checkpoint (a partial orbax restore): the optimizer state is never materialised.
    """
    from jax.sharding import SingleDeviceSharding

    from gopher_jax.data import tokenizer as tok
    from gopher_jax.model.config import ModelConfig
    from gopher_jax.parallel.mesh import MeshConfig, build_mesh
    from gopher_jax.parallel.rules import param_shardings, sharding_rules
    from gopher_jax.train.checkpoints import Checkpointer
    from gopher_jax.train.config import TrainConfig
    from gopher_jax.train.state import abstract_params

    workdir = os.path.abspath(workdir)
    _parse_run_gin(workdir)
    model_cfg, train_cfg = ModelConfig(), TrainConfig()
    if isinstance(mesh, str):
        mesh = parse_mesh(mesh)
    if isinstance(mesh, MeshConfig):
        mesh = build_mesh(mesh, jax.local_devices())
    if mesh is not None and rules is None:
        rules = sharding_rules()
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
    unboxed = nn.meta.unbox(boxed)
    if mesh is None:
        one = SingleDeviceSharding(jax.devices()[0])
        shardings = jax.tree.map(lambda _: one, unboxed)
    else:
        shardings = param_shardings(boxed, mesh, rules)
    target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), unboxed, shardings)
    try:
        params = ckpt.restore_params(step, target)
    except Exception as e:  # noqa: BLE001 — re-raised with the run and step named
        raise RuntimeError(f"could not restore step {step} from {ckpt_dir} ({type(e).__name__}: {e}); the "
                           f"checkpoint may be partial or from a different config.gin — try another --step") from e
    finally:
        ckpt.manager.close()
    path = train_cfg.tokenizer or tok.ensure_embedded_tokenizer(model_cfg.vocab_size)
    return LoadedModel(model_cfg, params, tok.load(path), int(step), workdir, mesh=mesh,
                       rules=None if mesh is None else tuple(rules),
                       param_shardings=None if mesh is None else shardings, tokenizer_path=path)
