"""The manifest of a processed corpus: per component and split, its documents, bytes and shards.

`gopher-jax data process --output OUT` writes OUT/manifest.json next to the shards
(OUT/<component>/<split>/part-SSSSS-of-NNNNN.{tfrecord,jsonl}); the seqio registrations read it,
so one output directory (local or gs://) is all a training run needs to name. Shape:

    {"format": "gopher_jax.corpus_manifest", "version": 1, "validation_fraction": 0.01,
     "components": {"books": {"stages": ["quality", ...],
                              "splits": {"train": {"documents": 12, "bytes": 345,
                                                   "tfrecord": "books/train/part-*-of-00004.tfrecord",
                                                   "jsonl": "books/train/part-*-of-00004.jsonl"},
                                         "validation": {...}}}}}

`documents` counts output records (one per kept document; MT-NLG decontamination can cut one
document into several records), `bytes` the UTF-8 bytes of their texts. Patterns are relative
to the manifest's directory, so an output directory can be copied or moved (e.g. to gs://)
whole; a pattern is null when that split has no files (validation_fraction 0, or --no_tfrecord).

All I/O goes through tf.io.gfile, so gs:// (and ram:// in tests) work the same as local paths.
"""
from __future__ import annotations

import dataclasses
import json
import os
import uuid

MANIFEST_NAME = "manifest.json"
FORMAT = "gopher_jax.corpus_manifest"
VERSION = 1
SPLITS = ("train", "validation")
KINDS = ("tfrecord", "jsonl")


def _gfile():
    import tensorflow as tf  # lazy: a heavy import, and only I/O on URLs needs it
    return tf.io.gfile


def _exists(path: str) -> bool:
    """os.path.exists for local paths (no TensorFlow), tf.io.gfile for URLs such as gs://."""
    return _gfile().exists(path) if "://" in path else os.path.exists(path)


@dataclasses.dataclass(frozen=True)
class SplitEntry:
    """One split of one component: its size and its shards' glob patterns (relative to the root)."""

    documents: int  # output records (= jsonl lines = tf.train.Examples)
    bytes: int  # UTF-8 bytes of those records' texts
    tfrecord: str | None  # e.g. "books/train/part-*-of-00004.tfrecord"; None when not written
    jsonl: str | None


@dataclasses.dataclass(frozen=True)
class ComponentEntry:
    """One component (document source) of the corpus and the stages its documents went through."""

    name: str
    splits: dict[str, SplitEntry]
    stages: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class CorpusManifest:
    """Everything `data process` wrote into one output directory (`root`)."""

    root: str  # the directory holding manifest.json
    validation_fraction: float
    components: dict[str, ComponentEntry]

    def pattern(self, component: str, split: str, kind: str = "tfrecord") -> str:
        """Returns the absolute glob of one component's split shards ("tfrecord" or "jsonl").

        Raises ValueError naming the component/split and what the manifest does have.
        """
        if kind not in KINDS:
            raise ValueError(f"kind={kind!r}: expected one of {KINDS}")
        where = os.path.join(self.root, MANIFEST_NAME)
        if component not in self.components:
            raise ValueError(f"{where} has no component {component!r}; it has {sorted(self.components)}. "
                             f"Process it with `gopher-jax data process --input {component}=PATH "
                             f"--output {self.root}`")
        entry = self.components[component]
        split_entry = entry.splits.get(split)
        if split_entry is None:
            raise ValueError(f"{where}: component {component!r} has no split {split!r}; "
                             f"splits: {sorted(entry.splits)}")
        relative = getattr(split_entry, kind)
        if relative is None:
            written = [f"{s}/{k}" for s, e in entry.splits.items() for k in KINDS if getattr(e, k)]
            why = ("validation_fraction is 0, so no validation shards were written"
                   if split == "validation" and self.validation_fraction == 0 else
                   f"no {kind} shards were written (--no_tfrecord?)" if kind == "tfrecord" else
                   "no shards were written for it")
            raise ValueError(f"{where}: component {component!r} split {split!r} has no {kind} files: {why}. "
                             f"Written: {written or 'nothing'}")
        return os.path.join(self.root, relative)

    def to_json(self) -> dict:
        """Returns the JSON-serialisable manifest (components sorted by name; root not stored)."""
        return {
            "format": FORMAT, "version": VERSION, "validation_fraction": self.validation_fraction,
            "components": {
                name: {"stages": list(c.stages),
                       "splits": {s: dataclasses.asdict(e) for s, e in c.splits.items()}}
                for name, c in sorted(self.components.items())}}

    @classmethod
    def from_json(cls, d: dict, root: str) -> "CorpusManifest":
        """Returns the manifest of `to_json` output `d` found in directory `root`.

        Raises ValueError on another format or version, or a missing field.
        """
        where = os.path.join(root, MANIFEST_NAME)
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            got = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise ValueError(f"{where} is not a gopher_jax corpus manifest (format {got!r}, expected {FORMAT!r})")
        if d.get("version") != VERSION:
            raise ValueError(f"{where} has manifest version {d.get('version')!r}; this gopher_jax reads version "
                             f"{VERSION}: re-run `gopher-jax data process --output {root}`")
        try:
            components = {
                name: ComponentEntry(
                    name=name, stages=tuple(c["stages"]),
                    splits={s: SplitEntry(documents=int(e["documents"]), bytes=int(e["bytes"]),
                                          tfrecord=e["tfrecord"], jsonl=e["jsonl"])
                            for s, e in c["splits"].items()})
                for name, c in d["components"].items()}
            fraction = float(d["validation_fraction"])
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"{where} is malformed ({type(e).__name__}: {e}); "
                             f"re-run `gopher-jax data process --output {root}`") from None
        return cls(root=root, validation_fraction=fraction, components=components)


def _locate(path: str) -> tuple[str, str]:
    """Returns (root directory, manifest file) for a directory or a manifest.json path."""
    path = path.rstrip("/") if not path.endswith("://") else path
    if os.path.basename(path) == MANIFEST_NAME:
        return os.path.dirname(path), path
    return path, os.path.join(path, MANIFEST_NAME)


def read_manifest(path: str) -> CorpusManifest:
    """Returns the manifest in directory `path` (or the manifest.json file `path` itself).

    Raises FileNotFoundError when there is none, ValueError when it is not a readable manifest.
    """
    root, file = _locate(path)
    if not _exists(file):
        raise FileNotFoundError(f"no corpus manifest at {file}: run `gopher-jax data process --output DIR` "
                                f"first, with DIR={root}")
    with (_gfile().GFile(file, "r") if "://" in file else open(file, encoding="utf-8")) as f:
        text = f.read()
    try:
        d = json.loads(text)
    except ValueError as e:
        raise ValueError(f"{file} is not valid JSON ({e}); re-run `gopher-jax data process --output {root}`") from None
    return CorpusManifest.from_json(d, root)


def atomic_write_text(path: str, text: str) -> None:
    """Writes `text` to `path` through a temporary file and a rename, so readers never see half a file."""
    gfile = _gfile()
    directory = os.path.dirname(path)
    if directory:
        gfile.makedirs(directory)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    with gfile.GFile(tmp, "w") as f:
        f.write(text)
    gfile.rename(tmp, path, overwrite=True)


def existing_manifest(directory: str, validation_fraction: float) -> CorpusManifest | None:
    """Returns the manifest already in `directory` (None if there is none) after checking a run
    with `validation_fraction` may merge into it; raises ValueError naming both fractions if not.

    The runners call this before processing, so a mismatch fails before any shard is written.
    """
    _, path = _locate(directory)
    if not _exists(path):
        return None
    old = read_manifest(path)
    if old.validation_fraction != validation_fraction:
        raise ValueError(
            f"{path} was written with validation_fraction={old.validation_fraction}, this run uses "
            f"validation_fraction={validation_fraction}: one output directory has one split rule. "
            f"Set corpus.PipelineConfig.validation_fraction={old.validation_fraction} (or "
            f"--validation_fraction), or write to another --output")
    return old


def write_manifest(manifest: CorpusManifest, directory: str) -> str:
    """Writes `manifest` to directory/manifest.json, merged with the manifest already there; returns the path.

    Components of the existing manifest that `manifest` does not have are kept, so `data process`
    can run once per component (e.g. with different --stages) into one output directory; a
    re-processed component replaces its old entry. Raises ValueError when the existing manifest's
    validation_fraction differs (one directory, one split rule) or it is not a readable manifest.
    Not safe against two runs merging into one directory at the same time.
    """
    root, path = _locate(directory)
    components = dict(manifest.components)
    old = existing_manifest(directory, manifest.validation_fraction)
    if old is not None:
        components = {**old.components, **components}
    merged = CorpusManifest(root=root, validation_fraction=manifest.validation_fraction, components=components)
    atomic_write_text(path, json.dumps(merged.to_json(), indent=2) + "\n")
    return path
