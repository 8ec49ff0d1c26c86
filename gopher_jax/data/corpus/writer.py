"""Output shards: per component and split, jsonl (the `text` field plus the input's other fields)
and TFRecord for seqio; the held-out split rule; the manifest entries describing what was written.

Layout (both runners): OUT/<component>/<split>/part-SSSSS-of-NNNNN.{jsonl,tfrecord}, where the
component is the document's source (the NAME of --input NAME=PATH) and split is "train" or
"validation". Each split of each component has exactly NNNNN shards (some may be empty).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import zlib
from typing import Sequence

from gopher_jax.data.corpus.documents import Doc
from gopher_jax.data.manifest import SPLITS, ComponentEntry, CorpusManifest, SplitEntry, existing_manifest

SHARD_TEMPLATE = "part-{index:05d}-of-{count:05d}"  # Beam's default "-SSSSS-of-NNNNN" naming
# Component names become directory names and seqio task-name suffixes.
_COMPONENT_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def record_line(record: dict) -> str:
    """Returns the jsonl line of one output record (the same bytes in both runners)."""
    return json.dumps(record, ensure_ascii=False)


def record_bytes(record: dict) -> int:
    """Returns the UTF-8 size of a record's text (what the manifest's `bytes` adds up)."""
    return len(record["text"].encode("utf-8"))


def shard_of(doc_id: str, num_shards: int) -> int:
    """Returns a stable shard index for a document id."""
    return zlib.crc32(doc_id.encode("utf-8")) % num_shards


def split_of(component: str, doc_id: str, validation_fraction: float) -> str:
    """Returns "validation" or "train" for a document, from its component and stable id only.

    Rule: validation iff int(sha1(component + "\\x00" + doc_id)) / 2**160 < validation_fraction.
    Independent of input order, runner and the other documents, so every run (and a run with
    more data added) puts a given document in the same split; all records of one document
    (MT-NLG fragments) share its split.
    """
    digest = hashlib.sha1(f"{component}\x00{doc_id}".encode("utf-8")).digest()
    return "validation" if int.from_bytes(digest, "big") / 2**160 < validation_fraction else "train"


def check_validation_fraction(fraction: float) -> float:
    """Returns the fraction; raises ValueError naming the gin binding when outside [0, 1]."""
    if not isinstance(fraction, (int, float)) or not 0.0 <= fraction <= 1.0:
        raise ValueError(f"corpus.PipelineConfig.validation_fraction={fraction!r}: expected a number in [0, 1] "
                         "(0.01 holds out 1% of each component's documents; 0 writes no validation split)")
    return float(fraction)


def check_component_names(names: Sequence[str]) -> None:
    """Raises ValueError naming a component that cannot be a directory / task name."""
    bad = [n for n in names if not _COMPONENT_NAME.match(n)]
    if bad:
        raise ValueError(f"component name(s) {bad} cannot name output directories: use letters, digits, '_', "
                         "'-' and '.' (not first), e.g. --input books=PATH")


def check_output(files: Sequence[tuple[str, str]], output_dir: str, validation_fraction: float) -> list[str]:
    """Returns the sorted components of (source, path) `files` after checking, before any processing,
    the fraction, the component names, and that output_dir's manifest (if any) can be merged into.
    """
    check_validation_fraction(validation_fraction)
    components = sorted({source for source, _ in files})
    check_component_names(components)
    existing_manifest(output_dir, validation_fraction)
    return components


def written_splits(validation_fraction: float) -> tuple[str, ...]:
    """Returns the splits that get files: "validation" only if the fraction is > 0, "train" if < 1."""
    return tuple(s for s in SPLITS if (validation_fraction > 0 if s == "validation" else validation_fraction < 1))


def split_dir(output_dir: str, component: str, split: str) -> str:
    """Returns the directory of one component's split shards, OUT/<component>/<split>."""
    return os.path.join(output_dir, component, split)


def split_pattern(component: str, split: str, num_shards: int, suffix: str) -> str:
    """Returns the manifest's relative glob of one split's shards, e.g. "books/train/part-*-of-00004.tfrecord".

    The shard count is part of the pattern, so shards left by an earlier run with another
    --num_shards are never read.
    """
    return f"{component}/{split}/part-*-of-{num_shards:05d}{suffix}"


def tf_example(text: str) -> bytes:
    """Returns a serialized tf.train.Example with one bytes feature "text" (seqio's default)."""
    import tensorflow as tf
    feature = {"text": tf.train.Feature(bytes_list=tf.train.BytesList(value=[text.encode("utf-8")]))}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _open_text(path: str):
    if "://" in path:  # gs:// and the like: TensorFlow's filesystems, as for the TFRecords
        import tensorflow as tf
        return tf.io.gfile.GFile(path, "w")
    return open(path, "w", encoding="utf-8")


def _makedirs(path: str) -> None:
    if "://" in path:
        import tensorflow as tf
        tf.io.gfile.makedirs(path)
    else:
        os.makedirs(path, exist_ok=True)


def write_shards(docs: Sequence[Doc], output_dir: str, components: Sequence[str], num_shards: int,
                 write_tfrecord: bool, validation_fraction: float) -> dict[tuple[str, str], tuple[int, int]]:
    """Writes kept documents' records under output_dir/<component>/<split>/.

    Every split of `written_splits(validation_fraction)` of every component gets num_shards
    files, empty ones included. Returns {(component, split): (records, UTF-8 text bytes)}.
    """
    splits = written_splits(validation_fraction)
    groups: dict[tuple[str, str], list[Doc]] = {(c, s): [] for c in components for s in splits}
    for doc in docs:
        if doc.alive:
            groups[(doc.source, split_of(doc.source, doc.id, validation_fraction))].append(doc)
    counts = {}
    # One (component, split) at a time: at most 2 * num_shards files open.
    for (component, split), group in groups.items():
        directory = split_dir(output_dir, component, split)
        _makedirs(directory)
        names = [os.path.join(directory, SHARD_TEMPLATE.format(index=i, count=num_shards)) for i in range(num_shards)]
        jsonl = [_open_text(n + ".jsonl") for n in names]
        tfrec = []
        if write_tfrecord:
            import tensorflow as tf
            tfrec = [tf.io.TFRecordWriter(n + ".tfrecord") for n in names]
        documents = size = 0
        try:
            for doc in group:
                shard = shard_of(doc.id, num_shards)
                for rec in doc.output_records():
                    jsonl[shard].write(record_line(rec) + "\n")
                    if tfrec:
                        tfrec[shard].write(tf_example(rec["text"]))
                    documents, size = documents + 1, size + record_bytes(rec)
        finally:
            for f in jsonl + tfrec:
                f.close()
        counts[(component, split)] = (documents, size)
    return counts


def corpus_manifest(output_dir: str, components: Sequence[str], counts: dict[tuple[str, str], tuple[int, int]],
                    num_shards: int, write_tfrecord: bool, validation_fraction: float,
                    stages: Sequence[str]) -> CorpusManifest:
    """Returns the manifest of one run from its per-(component, split) (records, bytes) counts.

    A (component, split) missing from `counts` wrote no record (0, 0); its pattern is still set
    when its (empty) shards were written, and None when the split was not written at all.
    """
    written = written_splits(validation_fraction)
    entries = {}
    for c in sorted(components):
        splits = {}
        for s in SPLITS:
            documents, size = counts.get((c, s), (0, 0))
            on = s in written
            splits[s] = SplitEntry(
                documents=documents, bytes=size,
                tfrecord=split_pattern(c, s, num_shards, ".tfrecord") if on and write_tfrecord else None,
                jsonl=split_pattern(c, s, num_shards, ".jsonl") if on else None)
        entries[c] = ComponentEntry(name=c, splits=splits, stages=tuple(stages))
    return CorpusManifest(root=output_dir, validation_fraction=validation_fraction, components=entries)


def read_output_records(output_dir: str) -> list[str]:
    """Returns every jsonl line anywhere under output_dir, sorted (for comparing runs).

    Pass OUT/<component>/<split> to compare one split.
    """
    if "://" in output_dir:
        import tensorflow as tf
        walk, open_ = tf.io.gfile.walk, tf.io.gfile.GFile
    else:
        walk, open_ = os.walk, (lambda p: open(p, encoding="utf-8"))
    lines = []
    for directory, _, files in walk(output_dir):
        for name in sorted(files):
            if name.endswith(".jsonl"):
                with open_(os.path.join(directory, name)) as f:
                    lines += f.read().splitlines()
    return sorted(lines)
