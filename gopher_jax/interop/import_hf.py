"""Import a local Hugging Face Llama-family checkpoint as a gopher-jax run directory.

Writes `workdir/config.gin` (the architecture as ModelConfig bindings, the run settings from the
given gin files, `train.tokenizer` pointing at the copied SentencePiece model) and an orbax
checkpoint at step 0 in the training loop's layout: the train state with the imported params and a
fresh optimizer state, plus the data-iterator position of a new run. `gopher-jax eval`, `sample`
and `train --resume` then read it like any run.

Weights are streamed: each of our parameters is built with `jax.make_array_from_callback`, whose
callback reads, per device shard, only the HF tensors of the layers that shard holds (safetensors
`safe_open` maps the file; one layer's tensor is in host memory at a time) and puts the slice
straight onto its device. The model never sits whole in host memory beside its device copy.
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import time

import numpy as np

from gopher_jax.interop import hf_mapping

DEFAULT_RUN_GIN = "gin_configs/runs/pretrain.gin"
# Tensors of older HF checkpoints that hold no weights (recomputed by transformers).
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


class _SafetensorsDir:
    """Name -> tensor over the (possibly sharded) safetensors files of an HF model directory."""

    def __init__(self, hf_dir: str):
        from safetensors import safe_open

        index = os.path.join(hf_dir, "model.safetensors.index.json")
        if os.path.isfile(index):
            with open(index) as f:
                weight_map = json.load(f)["weight_map"]
            files = sorted(set(weight_map.values()))
        else:
            files = sorted(os.path.basename(p) for p in glob.glob(os.path.join(hf_dir, "*.safetensors")))
            weight_map = None
        if not files:
            raise FileNotFoundError(f"no *.safetensors in --hf_dir={hf_dir!r}; save the model with "
                                    f"save_pretrained(..., safe_serialization=True) (PyTorch .bin files are not read)")
        self._handles = {name: safe_open(os.path.join(hf_dir, name), framework="numpy") for name in files}
        if weight_map is None:
            weight_map = {k: name for name, h in self._handles.items() for k in h.keys()}
        self.weight_map = weight_map

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._handles[self.weight_map[name]].get_slice(name).get_shape())

    def read(self, name: str) -> np.ndarray:
        import ml_dtypes  # noqa: F401 — lets numpy read bfloat16 tensors

        return self._handles[self.weight_map[name]].get_tensor(name)


def _model_bindings(fields: dict) -> list[str]:
    return [f"ModelConfig.{k} = {v!r}" for k, v in fields.items()]


def _build_param(t, j, shape, dtype, sharding, source, num_layers):
    """Our parameter `t.ours[j]` as a global jax array in `sharding`, read from `source` per shard."""
    import jax

    cache: dict = {}  # replicated shards ask for the same index on every device: read once

    def one_layer(name):
        return np.asarray(t.from_hf(source.read(name))[j], dtype)

    def callback(index):
        key = tuple((s.start, s.stop, s.step) for s in index)
        if key not in cache:
            if t.per_layer:
                layers = range(num_layers)[index[0]]
                cache[key] = np.stack([one_layer(t.hf.format(i=i))[index[1:]] for i in layers])
            else:
                cache[key] = one_layer(t.hf)[index]
        return cache[key]

    array = jax.make_array_from_callback(shape, sharding, callback)
    cache.clear()
    return array


def import_hf(hf_dir: str, workdir: str, *, mesh="data", gin_files=(), gin_params=(), tokenizer: str | None = None,
              log=print) -> dict:
    """Imports the HF Llama-family model in `hf_dir` into a new run directory `workdir`.

    `mesh` ("data", "single", "data=2,fsdp=4", ... as for `gopher-jax eval`) is where the params are
    placed and sharded, with the rules table of the gin files. `gin_files`/`gin_params` give the
    run settings for a later `train --resume` (default gin_configs/runs/pretrain.gin); the
    architecture bindings from config.json are applied last. `tokenizer` overrides
    `hf_dir/tokenizer.model`. Returns {"config", "seconds", "workdir", "tensors"}.
    """
    import gin
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec

    from gopher_jax import gin_utils
    from gopher_jax.data import tokenizer as tok
    import gopher_jax.data.training_data  # noqa: F401
    import gopher_jax.train.checkpoint_errors  # noqa: F401 — gin checkpoint_restore.*
    from gopher_jax.eval.checkpoint_loader import parse_mesh
    import gopher_jax.train.loop  # noqa: F401 — registers every configurable
    from gopher_jax.model.config import ModelConfig
    from gopher_jax.parallel.mesh import MeshConfig, build_mesh
    from gopher_jax.parallel.rules import sharding_rules
    from gopher_jax.train.checkpoints import Checkpointer
    from gopher_jax.train.config import OptimizerConfig, TrainConfig
    from gopher_jax.train.sharded import build_trainer
    from gopher_jax.train.state import TrainState

    start = time.perf_counter()
    config_path = os.path.join(hf_dir, "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"{config_path} not found: --hf_dir must be a local transformers model directory "
                                f"(config.json + *.safetensors); import never downloads")
    with open(config_path) as f:
        fields = hf_mapping.model_config_from_hf(json.load(f))
    workdir = os.path.abspath(workdir)
    if os.path.isdir(os.path.join(workdir, "checkpoints")) and os.listdir(os.path.join(workdir, "checkpoints")):
        raise FileExistsError(f"{workdir} already holds checkpoints; import into a new --workdir "
                              f"(nothing was overwritten)")
    sp_path = tokenizer or os.path.join(hf_dir, "tokenizer.model")
    if not os.path.isfile(sp_path):
        raise FileNotFoundError(f"no SentencePiece model at {sp_path!r}: eval, sample and train read a .model file; "
                                f"pass --tokenizer=PATH (a SentencePiece .model matching the vocabulary)")
    pieces = tok.load(sp_path).get_piece_size()
    if pieces > fields["vocab_size"]:
        raise ValueError(f"the tokenizer {sp_path} has {pieces} pieces but config.json vocab_size="
                         f"{fields['vocab_size']}; pass the tokenizer this model was trained with (--tokenizer)")
    os.makedirs(workdir, exist_ok=True)
    local_sp = os.path.join(workdir, "tokenizer.model")
    shutil.copyfile(sp_path, local_sp)

    bindings = [*gin_params, *_model_bindings(fields), f"train.tokenizer = {local_sp!r}"]
    gin_utils.parse_gin(list(gin_files) or [DEFAULT_RUN_GIN], bindings)
    model_cfg, train_cfg, opt_cfg = ModelConfig(), TrainConfig(), OptimizerConfig()
    rules = sharding_rules()
    mesh_cfg = parse_mesh(mesh) if isinstance(mesh, str) else mesh
    devices = jax.local_devices()
    if mesh_cfg is None:  # one device
        mesh_cfg, devices = MeshConfig(data=1, fsdp=1, tensor=1, pipeline=1), devices[:1]
    jax_mesh = build_mesh(mesh_cfg, devices)
    trainer = build_trainer(model_cfg, opt_cfg, train_cfg, jax_mesh, rules)

    source = _SafetensorsDir(hf_dir)
    table = hf_mapping.tensors(model_cfg, hf_mapping.LLAMA)
    expected = {t.hf.format(i=i) for t in table for i in (range(model_cfg.num_layers) if t.per_layer else [0])}
    present = set(source.weight_map)
    missing = sorted(expected - present)
    extra = sorted(n for n in present - expected if not n.endswith(_IGNORED_SUFFIXES)
                   and not (model_cfg.tie_embeddings and n == "lm_head.weight"))  # some tied checkpoints store it
    if missing or extra:
        raise ValueError(f"{hf_dir} does not match its config.json: missing tensors {missing[:5]}"
                         f"{'...' if len(missing) > 5 else ''}, unexpected tensors {extra[:5]}"
                         f"{'...' if len(extra) > 5 else ''} (an exact import maps every tensor)")

    abstract, shardings = trainer.abstract_state.params, trainer.state_shardings.params
    params: dict = {}
    for t in table:
        for j, path in enumerate(t.ours):
            full = ("layers", *path) if t.per_layer else path
            leaf = hf_mapping.get_path(abstract, full)
            array = _build_param(t, j, leaf.shape, leaf.dtype, hf_mapping.get_path(shardings, full), source,
                                 model_cfg.num_layers)
            node = params
            for key in full[:-1]:
                node = node.setdefault(key, {})
            node[full[-1]] = array

    if jax.tree.structure(params) != jax.tree.structure(abstract):  # a guard on the table's completeness
        raise RuntimeError(f"internal: the Llama table built {jax.tree.structure(params)}, "
                           f"the model has {jax.tree.structure(abstract)}")
    state_sh = trainer.state_shardings
    with trainer.context():
        master = None
        if jnp.dtype(model_cfg.param_dtype) != jnp.float32:
            master = jax.jit(lambda p: jax.tree.map(lambda a: a.astype(jnp.float32), p),
                             out_shardings=state_sh.params)(params)
        opt_state = jax.jit(trainer.tx.init, out_shardings=state_sh.opt_state)(
            master if master is not None else params)
        step = jax.device_put(jnp.zeros((), jnp.int32), NamedSharding(jax_mesh, PartitionSpec()))
    state = TrainState(step=step, params=params, opt_state=opt_state, master=master)

    data_state = _fresh_data_state(local_sp, train_cfg)
    with open(os.path.join(workdir, "config.gin"), "w") as f:
        f.write(gin.config_str())
    ckpt = Checkpointer(workdir, async_save=False, run_config=gin.operative_config_str())
    ckpt.save(0, state, data_state, force=True)
    ckpt.close()
    seconds = time.perf_counter() - start
    log(f"imported {hf_dir} ({len(expected)} tensors) into {workdir}: checkpoint step 0, config.gin, "
        f"tokenizer.model ({seconds:.1f} s)")
    return {"config": model_cfg, "seconds": seconds, "workdir": workdir, "tensors": len(expected)}


def _fresh_data_state(vocab_path: str, train_cfg) -> dict:
    """The data-iterator state of a run that has drawn no row yet: `train --resume` starts its data
    stream from the top, whatever data the run's gin registers (gopher_jax/data/mixture_input.py)."""
    from gopher_jax.data.mixture_input import fresh_state

    del vocab_path, train_cfg
    return {**fresh_state(), "reliability": {"rewinds": 0}}
