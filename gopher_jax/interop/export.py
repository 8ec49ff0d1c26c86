"""Export a run's checkpoint as a Hugging Face transformers model directory.

Writes config.json, model.safetensors (or model-0000k-of-0000n.safetensors + the index when larger
than one shard) and the tokenizer (tokenizer_export.py). The checkpoint is read one parameter (a
layer-stacked array) at a time with a partial orbax restore and written tensor by tensor, so host
memory holds one stacked parameter plus the shard being written, never the whole model twice.
"""
from __future__ import annotations

import json
import os
import time

import numpy as np

from gopher_jax.atomic_write import atomic_write
from gopher_jax.interop import hf_mapping, run_files

DEFAULT_MAX_SHARD_BYTES = 5 * 2**30  # transformers' own default shard size (5 GB)


class _ShardWriter:
    """Collects named tensors and writes safetensors shards of at most `max_bytes` (a tensor larger
    than that gets a shard of its own); `finish` names them as transformers expects."""

    def __init__(self, out_dir: str, max_bytes: int):
        self.out_dir, self.max_bytes = out_dir, max_bytes
        self.pending: dict[str, np.ndarray] = {}
        self.pending_bytes = 0
        self.shards: list[tuple[str, list[str]]] = []  # (temp file, tensor names)
        self.total_bytes = 0

    def add(self, name: str, array: np.ndarray) -> None:
        if self.pending and self.pending_bytes + array.nbytes > self.max_bytes:
            self._flush()
        self.pending[name] = np.ascontiguousarray(array)
        self.pending_bytes += array.nbytes
        self.total_bytes += array.nbytes

    def _flush(self) -> None:
        from safetensors.numpy import save_file

        path = os.path.join(self.out_dir, f".tmp-shard-{len(self.shards):05d}.safetensors")
        save_file(self.pending, path, metadata={"format": "pt"})
        self.shards.append((path, list(self.pending)))
        self.pending, self.pending_bytes = {}, 0

    def finish(self) -> list[str]:
        """Writes the last shard, renames them all; returns the final file names."""
        if self.pending:
            self._flush()
        n = len(self.shards)
        names = ["model.safetensors"] if n == 1 else [f"model-{k + 1:05d}-of-{n:05d}.safetensors" for k in range(n)]
        for (tmp, _), name in zip(self.shards, names):
            os.replace(tmp, os.path.join(self.out_dir, name))
        if n > 1:
            index = {"metadata": {"total_size": self.total_bytes},
                     "weight_map": {t: name for (_, tensors), name in zip(self.shards, names) for t in tensors}}
            atomic_write(os.path.join(self.out_dir, "model.safetensors.index.json"),
                         lambda f: json.dump(index, f, indent=2))
        return names


def _flat_paths(tree, prefix=()) -> list[tuple[str, ...]]:
    if isinstance(tree, dict):
        return [p for k, v in tree.items() for p in _flat_paths(v, prefix + (k,))]
    return [prefix]


def _nest(path, leaf) -> dict:
    out = leaf
    for key in reversed(path):
        out = {key: out}
    return out


def export_hf(workdir: str, out_dir: str, *, step: int | None = None,
              max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES, log=print) -> dict:
    """Exports checkpoint `step` (default newest) of the run in `workdir` to `out_dir`.

    Returns {"architecture", "step", "files", "seconds", "bytes"}. Raises
    hf_mapping.UnsupportedArchitecture (naming the switch and the closest exportable ablation)
    before reading any weights when no transformers class represents the model exactly, and
    FileExistsError if `out_dir` is a non-empty directory (nothing is overwritten).
    """
    import flax.linen as nn
    import jax
    from jax.sharding import SingleDeviceSharding

    from gopher_jax.interop import tokenizer_export
    from gopher_jax.train.checkpoints import Checkpointer
    from gopher_jax.train.state import abstract_params

    start = time.perf_counter()
    workdir = os.path.abspath(workdir)
    cfg, train_cfg = run_files.parse_run(workdir)
    arch = hf_mapping.architecture(cfg)
    sp_model = run_files.tokenizer_path(cfg, train_cfg)  # before writing anything
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        raise FileExistsError(f"--out={out_dir!r} is a non-empty directory; choose a new one (nothing was overwritten)")
    os.makedirs(out_dir, exist_ok=True)

    abstract = nn.meta.unbox(abstract_params(cfg, cfg.max_len))  # shapes only (eval_shape)
    covered = hf_mapping.covered_paths(cfg, arch)
    stacked_form = [("layers", *p[1:]) if p[0].startswith("layers_") else p for p in _flat_paths(abstract)]
    unmapped = sorted({p for p in stacked_form if p not in covered})
    if unmapped:  # a guard: architecture() accepted a config the table does not fully describe
        raise RuntimeError(f"internal: parameters {['/'.join(p) for p in unmapped]} have no HF tensor for {arch}")
    device = SingleDeviceSharding(jax.local_devices()[0])
    ckpt = Checkpointer(workdir, async_save=False)
    writer = _ShardWriter(out_dir, max_shard_bytes)
    try:
        step = run_files.checkpoint_step(ckpt, step)

        def read(path):
            """Restores one parameter (all layers when stacked) from the checkpoint, as numpy."""
            leaf = hf_mapping.get_path(abstract, path)
            target = jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device)
            restored = ckpt.restore_params(step, _nest(path, target))
            return np.asarray(jax.device_get(hf_mapping.get_path(restored, path)), np.float32)

        for t in hf_mapping.tensors(cfg, arch):
            if not t.per_layer:
                writer.add(t.hf, t.to_hf(*[read(p) for p in t.ours]))
                continue
            if "layers" in abstract:  # scanned: one restore per parameter, all layers at once
                stacked = [read(("layers", *p)) for p in t.ours]
                for i in range(cfg.num_layers):
                    writer.add(t.hf.format(i=i), t.to_hf(*[a[i] for a in stacked]))
                del stacked
            else:
                for i in range(cfg.num_layers):
                    writer.add(t.hf.format(i=i), t.to_hf(*[read(hf_mapping.unscanned_path(i, p)) for p in t.ours]))
        files = writer.finish()
    finally:
        ckpt.manager.close()
        for tmp, _ in writer.shards:
            if os.path.exists(tmp):
                os.remove(tmp)

    ids = tokenizer_export.write_tokenizer(sp_model, out_dir, max_len=cfg.max_len)
    config = hf_mapping.hf_config(cfg, arch, **ids)
    atomic_write(os.path.join(out_dir, "config.json"), lambda f: json.dump(config, f, indent=2))
    atomic_write(os.path.join(out_dir, "generation_config.json"),
                 lambda f: json.dump({"bos_token_id": ids["start_id"], "eos_token_id": ids["eos_id"],
                                      "pad_token_id": ids["pad_id"]}, f, indent=2))
    seconds = time.perf_counter() - start
    log(f"exported step {step} of {workdir} as {hf_mapping.ARCHITECTURES[arch]} to {out_dir} "
        f"({writer.total_bytes / 2**20:.1f} MiB in {len(files)} file(s), {seconds:.1f} s)")
    return {"architecture": hf_mapping.ARCHITECTURES[arch], "step": int(step), "files": files,
            "seconds": seconds, "bytes": writer.total_bytes}
