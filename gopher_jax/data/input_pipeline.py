"""A seqio task or mixture -> packed, sharded numpy batches through tf.data (seqio's own packing).

`gopher-jax train` reads packed stores instead (gopher_jax/data/training_data.py: constant-time
resume on any host count); this streaming reader serves benchmarks, statistics and users who want
seqio's tf.data path as is.

    it = make_batches("embedded", batch_size=8, seq_len=256, seed=0, shuffle=True, repeat=True)
    batch = next(it)          # {"inputs", "targets", "loss_weights", "segment_ids", "positions"}
    state = it.get_state()    # JSON-serialisable; store it next to the checkpoint
    it = make_batches(..., state=state)   # or it.set_state(state): yields exactly the next batches

Resuming is by replay: the restored iterator rebuilds the same deterministic tf.data pipeline (same
seed, shard and shapes) and `skip`s the batches already consumed, so restoring costs time in
proportion to the batches consumed and needs the same host count; the training loop's packed stores
avoid both (docs/decisions/0004-packed-mixture-input.md).
"""
from __future__ import annotations

import contextlib
import math
from typing import Iterable, Mapping

import gin
import numpy as np

from gopher_jax.data import task_specs

# seqio and TensorFlow are imported by the functions that read a task, not at import time: the
# training loop, `plan`, `sample` and `eval` import this module (its gin configurable, the
# bits-per-byte conversion) and should not pay TensorFlow's ~5-10 s start-up for it.

STATE_VERSION = 1
# seqio packed decoder features -> the names the trainer reads.
_FEATURES = {
    "inputs": ("decoder_input_tokens", np.int32),
    "targets": ("decoder_target_tokens", np.int32),
    "loss_weights": ("decoder_loss_weights", np.float32),
    "segment_ids": ("decoder_segment_ids", np.int32),
    "positions": ("decoder_positions", np.int32),
}


def split_targets_to_length(dataset: "tf.data.Dataset", sequence_length: Mapping[str, int] | None = None,
                            output_features=None) -> "tf.data.Dataset":
    """seqio preprocessor: cuts each tokenized "targets" into pieces of at most sequence_length["targets"].

    Without it packing would truncate every document to one sequence and drop the rest of it.
    Returns the dataset unchanged when no sequence length is given (e.g. for corpus statistics).
    """
    import tensorflow as tf

    del output_features
    if not sequence_length or sequence_length.get("targets") is None:
        return dataset
    length = int(sequence_length["targets"])

    def split(ex):
        tokens = ex["targets"]
        n = tf.size(tokens)
        pad = (length - n % length) % length
        pieces = tf.reshape(tf.pad(tokens, [[0, pad]], constant_values=-1), [-1, length])
        return tf.data.Dataset.from_tensor_slices(pieces).map(lambda p: {"targets": p[p >= 0]})

    return dataset.map(lambda ex: {"targets": ex["targets"]}).flat_map(split)


def _default_split(provider) -> str:
    """The split a task was registered with when it has exactly one (embedded tasks), else "train"."""
    splits = list(getattr(provider, "splits", ()) or ())
    return splits[0] if len(splits) == 1 else "train"


@contextlib.contextmanager
def task_shuffle_buffers(provider, size: int | None):
    """Within the block, every seqio task under `provider` (a task, or a mixture's tasks) shuffles with a
    buffer of `size` examples instead of its registered one (None: the registered ones).

    seqio's Task.get_dataset takes a shuffle_buffer_size but Mixture.get_dataset does not, and a mixture
    reads its tasks at their registered size (10,000 for MassiveText): a dataset built inside the
    block keeps the size it was built with. The tasks' own settings are restored on exit."""
    tasks = [] if size is None else list(getattr(provider, "tasks", None) or [provider])
    saved = [t._shuffle_buffer_size for t in tasks]  # seqio 0.0.20's attribute behind shuffle_buffer_size
    try:
        for t in tasks:
            t._shuffle_buffer_size = size
        yield
    finally:
        for t, n in zip(tasks, saved):
            t._shuffle_buffer_size = n


class BatchIterator:
    """Iterator of packed batches (dicts of numpy arrays, each [batch_size, seq_len]).

    `get_state()` returns a JSON-serialisable dict; `set_state(state)` continues from it exactly.
    """

    def __init__(self, *, task_name: str, split: str, batch_size: int, seq_len: int, seed: int,
                 shuffle: bool, repeat: bool, shard_index: int, num_shards: int,
                 shuffle_buffer_size: int | None):
        self._config = dict(task_name=task_name, split=split, batch_size=batch_size, seq_len=seq_len,
                            seed=seed, shuffle=shuffle, repeat=repeat, shard_index=shard_index,
                            num_shards=num_shards)
        self._shuffle_buffer_size = shuffle_buffer_size
        self._consumed = 0
        self._iter = None

    def _dataset(self) -> "tf.data.Dataset":
        import seqio
        import tensorflow as tf

        c = self._config
        task_specs.ensure_seqio(c["task_name"])
        provider = seqio.get_mixture_or_task(c["task_name"])
        kwargs = dict(sequence_length={"targets": c["seq_len"]}, split=c["split"], shuffle=c["shuffle"],
                      seed=c["seed"], num_epochs=None if c["repeat"] else 1,
                      shard_info=seqio.ShardInfo(index=c["shard_index"], num_shards=c["num_shards"]))
        with task_shuffle_buffers(provider, self._shuffle_buffer_size if c["shuffle"] else None):
            ds = provider.get_dataset(**kwargs)
        ds = seqio.DecoderFeatureConverter(pack=True)(ds, {"targets": c["seq_len"]})
        ds = ds.map(lambda ex: {k: tf.cast(ex[src], dt) for k, (src, dt) in _FEATURES.items()},
                    num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.batch(c["batch_size"], drop_remainder=c["repeat"])
        if not c["repeat"]:
            ds = ds.map(lambda b: _pad_rows(b, c["batch_size"]))  # static shapes: no recompiles
        return ds.skip(self._consumed).prefetch(2)

    def __iter__(self) -> "BatchIterator":
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self._iter is None:
            self._iter = iter(self._dataset())
        batch = next(self._iter)  # StopIteration ends a non-repeating pass
        self._consumed += 1
        return {k: v.numpy() for k, v in batch.items()}

    def get_state(self) -> dict:
        """Returns {"version", "batches_consumed", and the pipeline config} as plain JSON types."""
        return {"version": STATE_VERSION, "batches_consumed": self._consumed, **self._config}

    def set_state(self, state: Mapping) -> None:
        """Continues from `state` (from get_state); raises ValueError if it was saved by a different
        pipeline (task, seed, shapes or sharding), because replaying it here would yield other data."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"data-iterator state version {state.get('version')!r} is not "
                             f"{STATE_VERSION}; it was written by another gopher_jax version")
        different = {k: (state.get(k), v) for k, v in self._config.items() if state.get(k) != v}
        if different:
            raise ValueError(
                "data-iterator state does not match this pipeline (saved, now): "
                + ", ".join(f"{k}={a!r}, {b!r}" for k, (a, b) in different.items())
                + "; restore with the same task, seed, batch_size, seq_len and host count, "
                  "or start the data from scratch")
        self._consumed = int(state["batches_consumed"])
        self._iter = None


def _pad_rows(batch: dict, batch_size: int) -> dict:
    """Pads a short final batch with all-zero rows (zero loss weight, segment id 0 = padding)."""
    import tensorflow as tf

    n = tf.shape(batch["inputs"])[0]
    return {k: tf.pad(v, [[0, batch_size - n], [0, 0]]) for k, v in batch.items()}


@gin.configurable(denylist=["batch_size", "seq_len", "seed", "shard_index", "num_shards", "state"])
def make_batches(task_name: str, *, batch_size: int, seq_len: int, seed: int, shuffle: bool,
                 repeat: bool, shard_index: int = 0, num_shards: int = 1, split: str | None = None,
                 shuffle_buffer_size: int | None = None, state: Mapping | None = None) -> BatchIterator:
    """Returns a BatchIterator over packed batches of a registered seqio task or mixture.

    Each of `num_shards` hosts passes its `shard_index` and reads a disjoint share of the examples;
    `batch_size` is per shard. `split` defaults to the task's only split (or "train"). With
    repeat=False the pass ends after one epoch and the last batch is padded to full size.
    `shuffle_buffer_size` overrides the shuffle buffer of the task, or of each task of a mixture (gin:
    make_batches.shuffle_buffer_size = ...; default: their registered sizes).
    """
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index={shard_index} must be in [0, num_shards={num_shards})")
    for name, value in (("batch_size", batch_size), ("seq_len", seq_len)):
        if value < 1:
            raise ValueError(f"{name}={value} must be positive")
    import seqio

    task_specs.ensure_seqio(task_name)
    try:
        provider = seqio.get_mixture_or_task(task_name)
    except ValueError as e:
        raise ValueError(
            f"seqio task or mixture {task_name!r} is not registered ({e}); register it first, e.g. "
            "data_tasks.register_for_training(vocab_path) for the embedded mixture") from e
    it = BatchIterator(task_name=task_name, split=split or _default_split(provider),
                       batch_size=batch_size, seq_len=seq_len, seed=seed, shuffle=shuffle,
                       repeat=repeat, shard_index=shard_index, num_shards=num_shards,
                       shuffle_buffer_size=shuffle_buffer_size)
    if state is not None:
        it.set_state(state)
    return it


def _task_token_arrays(task_name: str, split: str | None) -> Iterable[tuple[np.ndarray, bytes]]:
    """Yields (tokens incl. EOS, raw UTF-8 text) per document of a task, unshuffled, one pass."""
    import seqio

    task_specs.ensure_seqio(task_name)
    provider = seqio.get_mixture_or_task(task_name)
    ds = provider.get_dataset(sequence_length=None, split=split or _default_split(provider),
                              shuffle=False, num_epochs=1, trim_output_features=False)
    for ex in ds.as_numpy_iterator():
        if "targets_pretokenized" not in ex:
            raise ValueError(f"task {task_name!r} keeps no 'targets_pretokenized' text; tokenize it with "
                             "seqio.preprocessors.tokenize (copy_pretokenized=True) to measure bytes")
        yield ex["targets"], ex["targets_pretokenized"]


def unigram_entropy_nats(source: str | Iterable[np.ndarray], split: str | None = None) -> float:
    """Returns the per-token entropy (nats) of the unigram distribution of the given tokens.

    `source` is a task/mixture name (all its tokens incl. EOS, one unshuffled pass of `split`) or
    token arrays (padding id 0 is ignored). The loss of the best context-free model: a trained LM's
    held-out loss should be well below it.
    """
    arrays = (t for t, _ in _task_token_arrays(source, split)) if isinstance(source, str) else source
    counts: dict[int, int] = {}
    for a in arrays:
        ids, n = np.unique(np.asarray(a).ravel(), return_counts=True)
        for i, c in zip(ids.tolist(), n.tolist()):
            if i != 0:
                counts[i] = counts.get(i, 0) + c
    if not counts:
        raise ValueError("no tokens to measure the unigram entropy of")
    p = np.array(list(counts.values()), dtype=np.float64)
    p /= p.sum()
    return float(-(p * np.log(p)).sum())


def bytes_per_token(task_name: str, split: str | None = None) -> float:
    """Returns UTF-8 bytes of raw text per token (incl. EOS) over one pass of a task's split.

    bits-per-byte = loss_nats_per_token / ln(2) / bytes_per_token.
    """
    tokens = text_bytes = 0
    for t, raw in _task_token_arrays(task_name, split):
        tokens += int(np.size(t))
        text_bytes += len(raw)
    if not tokens:
        raise ValueError(f"task {task_name!r} yielded no tokens")
    return text_bytes / tokens


def nats_to_bits_per_byte(loss_nats_per_token: float, bytes_per_token_: float) -> float:
    """Returns bits per UTF-8 byte for a per-token loss in nats."""
    return loss_nats_per_token / math.log(2) / bytes_per_token_
