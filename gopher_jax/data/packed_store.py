"""Index-addressable packed rows of one seqio task split: the training input's storage.

A store is built once from a registered seqio Task (its source, preprocessors and vocabulary: the
task defines the data, this only materialises it, like seqio's offline cache) and then read by row
number, so any position of any epoch is one seek away (docs/decisions/0004-packed-mixture-input.md).

Layout of a store directory (local or any tf.io.gfile filesystem, e.g. gs://):
    meta.json                 written last: its presence marks a complete store
    unit-00000.rows           int32 [rows, 2, seq_len]: targets, segment_ids (gopher_jax.data.packing)
    unit-00000.bytes          int64 [rows]: UTF-8 bytes of exactly the text each row covers
One unit per source file shard (seqio.ShardInfo(i, files)), so units can be packed in parallel.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import sys
from typing import Sequence

import numpy as np

from gopher_jax.data import packing, task_specs
from gopher_jax.data.token_bytes import TokenBytes

FORMAT = "gopher_jax.packed_store"
VERSION = 1
META = "meta.json"


def default_cache_dir() -> str:
    """Returns where stores are cached: $GOPHER_JAX_CACHE_DIR/packed, else ~/.cache/gopher_jax/packed."""
    root = os.environ.get("GOPHER_JAX_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "gopher_jax")
    return os.path.join(root, "packed")


def _gfile():
    import tensorflow as tf
    return tf.io.gfile


def _is_local(path: str) -> bool:
    return "://" not in path


def _open(path: str, mode: str):
    """Opens a local file with `open` and a URL with tf.io.gfile (TensorFlow only for URLs)."""
    return open(path, mode) if _is_local(path) else _gfile().GFile(path, mode)


def _exists(path: str) -> bool:
    return os.path.exists(path) if _is_local(path) else _gfile().exists(path)


def _makedirs(path: str) -> None:
    if _is_local(path):
        os.makedirs(path, exist_ok=True)
    else:
        _gfile().makedirs(path)


def file_sha256(path: str) -> str:
    """Returns the sha256 hex digest of a (local or gfile) file."""
    h = hashlib.sha256()
    with _open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


@dataclasses.dataclass(frozen=True)
class StoreMeta:
    """What a store holds and what it was built from (meta.json)."""

    task: str
    split: str
    seq_len: int
    rows: int
    tokens: int  # non-padding target tokens (incl. EOS)
    documents: int
    bytes: int  # UTF-8 bytes of all documents
    vocab_sha256: str  # the SentencePiece .model file the tokens come from
    vocab_size: int
    source: dict  # {"files": [[path, size], ...]} or {"task": name} when the source has no files
    units: tuple  # ((file name, rows), ...)

    def to_json(self) -> dict:
        return {"format": FORMAT, "version": VERSION, **dataclasses.asdict(self), "units": [list(u) for u in self.units]}

    @classmethod
    def from_json(cls, d: dict, where: str) -> "StoreMeta":
        if d.get("format") != FORMAT or d.get("version") != VERSION:
            raise ValueError(f"{where} is not a {FORMAT} v{VERSION} store (format={d.get('format')!r}, "
                             f"version={d.get('version')!r}); rebuild it with `gopher-jax data pack`")
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: (tuple(tuple(u) for u in v) if k == "units" else v) for k, v in d.items() if k in fields})


def _task(task_name: str):
    import seqio
    task_specs.ensure_seqio(task_name)
    task = seqio.get_mixture_or_task(task_name)
    if not isinstance(task, seqio.Task):
        raise ValueError(f"{task_name!r} is a mixture; pack each of its tasks")
    return task


def _vocab_path(task) -> str:
    return task.output_features["targets"].vocabulary.sentencepiece_model_file


def _source_files(task, split: str) -> list[str]:
    lister = getattr(task.source, "list_shards", None)
    try:
        return sorted(lister(split)) if lister else []
    except (NotImplementedError, AttributeError, TypeError):
        return []


def vocab_path(task_name: str) -> str:
    """Returns the SentencePiece model file a task tokenizes with (from its spec when it has one)."""
    spec = task_specs.task(task_name)
    return spec.vocab_path if spec is not None else _vocab_path(_task(task_name))


def source_fingerprint(task_name: str, split: str) -> dict:
    """Returns what identifies a split's input: its files and their sizes (or just the task name).

    A task recorded in task_specs is fingerprinted from its spec's file pattern, without seqio."""
    spec = task_specs.task(task_name)
    if spec is not None:
        if split not in spec.splits:
            raise ValueError(f"task {task_name!r} has no split {split!r} (it has {list(spec.splits)})")
        files = task_specs.list_files(spec.splits[split])
        return {"files": [[f, task_specs.file_size(f)] for f in files]} if files else {"task": task_name}
    task = _task(task_name)
    if split not in task.splits:
        raise ValueError(f"task {task_name!r} has no split {split!r} (it has {list(task.splits)})")
    files = _source_files(task, split)
    if not files:
        return {"task": task_name}
    g = _gfile()
    return {"files": [[f, int(g.stat(f).length)] for f in files]}


@contextlib.contextmanager
def _native_stderr_silenced():
    """Sends file descriptor 2 to /dev/null; yields a text stream on the real stderr.

    tensorflow_text's SentencePiece op logs "precompiled_charsmap is empty. use identity
    normalization." to the C++ stderr each time seqio tokenizes a split with an identity-normalised
    model, and exposes no log level. Python exceptions still propagate; the progress bar goes to the
    yielded stream.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    stream = os.fdopen(os.dup(saved), "w", buffering=1)
    try:
        yield stream
    finally:
        stream.close()
        os.dup2(saved, 2)
        os.close(saved)


def build(task_name: str, split: str, seq_len: int, directory: str, progress: bool = True) -> StoreMeta:
    """Tokenizes (via the seqio task) and packs one split into `directory`; returns its StoreMeta."""
    with _native_stderr_silenced() as stderr:
        return _build(task_name, split, seq_len, directory, progress, stderr)


def _build(task_name: str, split: str, seq_len: int, directory: str, progress: bool, stderr) -> StoreMeta:
    import seqio
    from tqdm import tqdm

    task = _task(task_name)
    vocab = task.output_features["targets"].vocabulary
    tb = TokenBytes(vocab.tokenizer)
    fingerprint = source_fingerprint(task_name, split)
    n_units = max(1, len(fingerprint.get("files", [])))
    _makedirs(directory)
    units, tokens, documents, total_bytes = [], 0, 0, 0
    bar = tqdm(total=n_units, desc=f"pack {task_name}/{split}", unit=" shard", disable=not progress,
               file=stderr)
    for u in range(n_units):
        ds = task.get_dataset(sequence_length=None, split=split, shuffle=False, num_epochs=1, use_cached=False,
                              shard_info=seqio.ShardInfo(u, n_units) if n_units > 1 else None,
                              trim_output_features=False)
        packer = packing.RowPacker(seq_len)
        for ex in ds.as_numpy_iterator():
            ids = ex["targets"]
            text = ex["targets_pretokenized"].decode("utf-8")
            packer.add_document(ids, tb.of(text, ids))
            documents += 1
            tokens += int(len(ids))
            total_bytes += len(ex["targets_pretokenized"])
        rows = packer.finish()
        name = f"unit-{u:05d}"
        _write_bytes(os.path.join(directory, name + ".rows"),
                     np.stack([rows.targets, rows.segment_ids], axis=1).astype("<i4").tobytes())
        _write_bytes(os.path.join(directory, name + ".bytes"), rows.row_bytes.astype("<i8").tobytes())
        units.append((name, rows.num_rows))
        bar.update(1)
    bar.close()
    meta = StoreMeta(task=task_name, split=split, seq_len=seq_len, rows=sum(n for _, n in units), tokens=tokens,
                     documents=documents, bytes=total_bytes, vocab_sha256=file_sha256(_vocab_path(task)),
                     vocab_size=vocab.vocab_size, source=fingerprint, units=tuple(units))
    _write_bytes(os.path.join(directory, META), json.dumps(meta.to_json(), indent=1).encode())
    return meta


def _write_bytes(path: str, data: bytes) -> None:
    if _is_local(path):
        from gopher_jax.atomic_write import atomic_write
        atomic_write(path, lambda f: f.write(data), binary=True)
    else:  # object stores replace whole objects atomically
        with _gfile().GFile(path, "wb") as f:
            f.write(data)


def read_meta(directory: str) -> StoreMeta | None:
    """Returns the StoreMeta in `directory`, or None if there is no complete store there."""
    path = os.path.join(directory, META)
    if not _exists(path):
        return None
    with _open(path, "r") as f:
        return StoreMeta.from_json(json.load(f), path)


class PackedStore:
    """Reads rows of a built store by global row number."""

    def __init__(self, directory: str, meta: StoreMeta):
        self.directory = directory
        self.meta = meta
        self._offsets = np.cumsum([0] + [n for _, n in meta.units])
        self._rows_files, self._bytes_files = [], []
        L = meta.seq_len
        for name, n in meta.units:
            rows_path, bytes_path = (os.path.join(directory, name + ext) for ext in (".rows", ".bytes"))
            if _is_local(directory):
                self._rows_files.append(np.memmap(rows_path, "<i4", "r", shape=(n, 2, L)) if n else None)
                self._bytes_files.append(np.memmap(bytes_path, "<i8", "r", shape=(n,)) if n else None)
            else:
                self._rows_files.append(_RemoteArray(rows_path, (n, 2, L), np.dtype("<i4")))
                self._bytes_files.append(_RemoteArray(bytes_path, (n,), np.dtype("<i8")))

    @property
    def rows(self) -> int:
        return self.meta.rows

    def read(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Returns (targets [k, L], segment_ids [k, L], row_bytes [k]) of the rows at `indices`."""
        idx = np.asarray(indices, np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= self.rows):
            raise IndexError(f"rows {idx.min()}..{idx.max()} outside [0, {self.rows}) of {self.directory}")
        L = self.meta.seq_len
        rows = np.zeros((len(idx), 2, L), np.int32)
        nbytes = np.zeros((len(idx),), np.int64)
        unit = np.searchsorted(self._offsets, idx, side="right") - 1
        for u in np.unique(unit):
            sel = np.nonzero(unit == u)[0]
            local = idx[sel] - self._offsets[u]
            rows[sel] = self._rows_files[u][local]
            nbytes[sel] = self._bytes_files[u][local]
        return rows[:, 0], rows[:, 1], nbytes


class _RemoteArray:
    """Row reads of a raw little-endian array on a tf.io.gfile filesystem (one seek per row)."""

    def __init__(self, path: str, shape: tuple, dtype: np.dtype):
        self.path, self.shape, self.dtype = path, shape, dtype
        self._row = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        self._f = None

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        if self._f is None:
            self._f = _gfile().GFile(self.path, "rb")
        out = np.empty((len(rows),) + tuple(self.shape[1:]), self.dtype)
        for j, r in enumerate(np.asarray(rows)):
            self._f.seek(int(r) * self._row)
            out[j] = np.frombuffer(self._f.read(self._row), self.dtype).reshape(self.shape[1:])
        return out


def store_dir(cache_dir: str, task_name: str, split: str, seq_len: int) -> str:
    """Returns the directory of one (task, split, seq_len) store under a cache or packed-data root."""
    return os.path.join(cache_dir, task_name, split, f"L{seq_len}")


def open_store(task_name: str, split: str, seq_len: int, cache_dir: str | None = None, *, build_missing: bool = True,
               progress: bool = True) -> PackedStore:
    """Returns the store of a task split, building it first when missing or stale.

    A store is stale when its source files, vocabulary or sequence length differ from the task's
    now. In a cache it is then rebuilt (with a note); with build_missing=False (a pre-built root such
    as gs://bucket/packed) a stale or missing store is an error naming the difference and the fix.
    """
    cache_dir = cache_dir or default_cache_dir()
    directory = store_dir(cache_dir, task_name, split, seq_len)
    want = {"vocab_sha256": file_sha256(vocab_path(task_name)), "source": source_fingerprint(task_name, split),
            "seq_len": seq_len}
    meta = read_meta(directory)
    if meta is not None:
        have = {"vocab_sha256": meta.vocab_sha256, "source": meta.source, "seq_len": meta.seq_len}
        stale = [k for k in want if want[k] != have[k]]
        if not stale:
            return PackedStore(directory, meta)
        what = {"vocab_sha256": f"it was tokenized with another vocabulary ({meta.vocab_size} pieces, sha256 "
                                f"{meta.vocab_sha256[:12]}; this run's tokenizer has sha256 {want['vocab_sha256'][:12]}: "
                                "set train.tokenizer to the model it was packed with, or repack)",
                "source": "its source files changed since it was packed",
                "seq_len": f"it was packed for seq_len {meta.seq_len}"}
        reason = "; ".join(what[k] for k in stale)
        if not build_missing:
            raise ValueError(f"packed store {directory} does not match task {task_name!r} split {split!r}: {reason}. "
                             f"Repack with `gopher-jax data pack --out={cache_dir} ...` or point the run at the "
                             "matching data")
        print(f"note: repacking {task_name}/{split} (L={seq_len}): {reason}", file=sys.stderr)
    elif not build_missing:
        raise FileNotFoundError(f"no packed store for task {task_name!r} split {split!r} at seq_len {seq_len} "
                                f"in {cache_dir} (looked for {directory}/{META}); build it with "
                                f"`gopher-jax data pack --out={cache_dir} --seq_len={seq_len} ...`")
    meta = build(task_name, split, seq_len, directory, progress=progress)
    return PackedStore(directory, meta)
