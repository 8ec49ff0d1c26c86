"""Output shards: jsonl (the `text` field plus the input's other fields) and TFRecord for seqio."""
from __future__ import annotations

import json
import os
import zlib
from typing import Iterable

from gopher_jax.data.corpus.documents import Doc

SHARD_TEMPLATE = "part-{index:05d}-of-{count:05d}"  # Beam's default "-SSSSS-of-NNNNN" naming


def record_line(record: dict) -> str:
    """Returns the jsonl line of one output record (the same bytes in both runners)."""
    return json.dumps(record, ensure_ascii=False)


def shard_of(doc_id: str, num_shards: int) -> int:
    """Returns a stable shard index for a document id."""
    return zlib.crc32(doc_id.encode("utf-8")) % num_shards


def tf_example(text: str) -> bytes:
    """Returns a serialized tf.train.Example with one bytes feature "text" (seqio's default)."""
    import tensorflow as tf
    feature = {"text": tf.train.Feature(bytes_list=tf.train.BytesList(value=[text.encode("utf-8")]))}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_shards(docs: Iterable[Doc], output_dir: str, num_shards: int, write_tfrecord: bool) -> list[str]:
    """Writes kept documents' records to output_dir; returns the paths written."""
    os.makedirs(output_dir, exist_ok=True)
    names = [os.path.join(output_dir, SHARD_TEMPLATE.format(index=i, count=num_shards)) for i in range(num_shards)]
    jsonl = [open(n + ".jsonl", "w", encoding="utf-8") for n in names]
    tfrec = []
    if write_tfrecord:
        import tensorflow as tf
        tfrec = [tf.io.TFRecordWriter(n + ".tfrecord") for n in names]
    try:
        for doc in docs:
            shard = shard_of(doc.id, num_shards)
            for rec in doc.output_records():
                jsonl[shard].write(record_line(rec) + "\n")
                if tfrec:
                    tfrec[shard].write(tf_example(rec["text"]))
    finally:
        for f in jsonl + tfrec:
            f.close()
    return [n + ".jsonl" for n in names] + ([n + ".tfrecord" for n in names] if tfrec else [])


def read_output_records(output_dir: str) -> list[str]:
    """Returns every jsonl line under output_dir, sorted (for comparing runs)."""
    lines = []
    for name in sorted(os.listdir(output_dir)):
        if name.endswith(".jsonl"):
            with open(os.path.join(output_dir, name), encoding="utf-8") as f:
                lines += f.read().splitlines()
    return sorted(lines)
