"""Held-out splits by document hash and the corpus manifest: counts, merging, errors, gs://-style paths."""
import dataclasses
import hashlib
import json
import math
import os
import random

import pytest
import tensorflow as tf

from gopher_jax.data import manifest as M
from gopher_jax.data.corpus import config as C
from gopher_jax.data.corpus.local_pipeline import run_local
from gopher_jax.data.corpus.writer import read_output_records, split_of


def write_docs(path, n, seed=0, prefix="doc"):
    rng = random.Random(seed)
    words = ["alpha", "beta", "gamma", "delta", "épsilon", "zeta", "eta", "θeta"]  # some multi-byte UTF-8
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            text = f"{prefix} {i} " + " ".join(rng.choice(words) for _ in range(rng.randint(5, 40)))
            f.write(json.dumps({"text": text, "n": i}, ensure_ascii=False) + "\n")


def config(fraction, stages=(), tfrecord=False, num_shards=2):
    return C.ProcessConfig(pipeline=C.PipelineConfig(stages=stages, num_shards=num_shards, write_tfrecord=tfrecord,
                                                     validation_fraction=fraction))


def recount(root, relative_pattern):
    """Returns (records, UTF-8 text bytes) of the jsonl files a manifest pattern names."""
    lines = [line for p in tf.io.gfile.glob(os.path.join(root, relative_pattern))
             for line in tf.io.gfile.GFile(p).read().splitlines()]
    return len(lines), sum(len(json.loads(line)["text"].encode("utf-8")) for line in lines)


def test_split_rule_is_the_documented_hash_and_holds_out_the_fraction():
    ids = [f"web/raw/shard.jsonl:{i:09d}" for i in range(1000)]
    for fraction in (0.0, 0.05, 0.3, 1.0):
        # Independent statement of the rule in the docs: sha1("component\0id") as a 160-bit fraction.
        expected = ["validation" if int(hashlib.sha1(f"web\x00{i}".encode()).hexdigest(), 16) < fraction * 2**160
                    else "train" for i in ids]
        assert [split_of("web", i, fraction) for i in ids] == expected
        held = expected.count("validation")
        sd = math.sqrt(len(ids) * fraction * (1 - fraction))
        assert abs(held - fraction * len(ids)) <= 4 * sd  # binomial: 4 standard deviations (exact at 0 and 1)
    # The component is part of the key: the same id is held out independently in two components.
    assert [split_of("web", i, 0.3) for i in ids] != [split_of("books", i, 0.3) for i in ids]


def test_manifest_counts_match_files_and_splits_are_stable(tmp_path):
    write_docs(tmp_path / "web.jsonl", 1000)
    cfg = config(0.1, tfrecord=True)
    stats = run_local([f"web={tmp_path / 'web.jsonl'}"], str(tmp_path / "a"), cfg, progress=False)
    m = M.read_manifest(str(tmp_path / "a"))
    assert m == M.read_manifest(str(tmp_path / "a" / "manifest.json"))
    assert m.root == str(tmp_path / "a") and m.validation_fraction == 0.1 and list(m.components) == ["web"]
    web = m.components["web"]
    assert web.stages == ()
    for split, entry in web.splits.items():
        assert (entry.documents, entry.bytes) == recount(m.root, entry.jsonl)
        assert len(tf.io.gfile.glob(m.pattern("web", split, "jsonl"))) == 2  # num_shards files
        n_examples = sum(1 for _ in tf.data.TFRecordDataset(tf.io.gfile.glob(m.pattern("web", split))))
        assert n_examples == entry.documents
    assert web.splits["train"].documents + web.splits["validation"].documents == stats.records_written == 1000
    held = web.splits["validation"].documents
    assert abs(held - 100) <= 4 * math.sqrt(1000 * 0.1 * 0.9)
    # Same documents in the same split on a second run, and in a run over a prefix of the file
    # elsewhere (a document's id, hence its split, is its source, parent directory name, file
    # name and index in the file; it does not depend on the other documents).
    run_local([f"web={tmp_path / 'web.jsonl'}"], str(tmp_path / "b"), cfg, progress=False)
    for split in ("train", "validation"):
        assert read_output_records(str(tmp_path / "a" / "web" / split)) == read_output_records(
            str(tmp_path / "b" / "web" / split))
    moved = tmp_path / "elsewhere" / tmp_path.name
    os.makedirs(moved)
    with open(tmp_path / "web.jsonl") as f, open(moved / "web.jsonl", "w") as g:
        g.writelines(f.readlines()[:500])
    run_local([f"web={moved / 'web.jsonl'}"], str(tmp_path / "c"), cfg, progress=False)
    part = set(read_output_records(str(tmp_path / "c" / "web" / "validation")))
    assert part and part <= set(read_output_records(str(tmp_path / "a" / "web" / "validation")))


def test_fraction_zero_writes_no_validation_split(tmp_path):
    write_docs(tmp_path / "books.jsonl", 50)
    run_local([str(tmp_path / "books.jsonl")], str(tmp_path / "out"), config(0.0), progress=False)
    m = M.read_manifest(str(tmp_path / "out"))
    assert m.components["books"].splits["validation"] == M.SplitEntry(documents=0, bytes=0, tfrecord=None, jsonl=None)
    assert m.components["books"].splits["train"].tfrecord is None  # write_tfrecord=False
    assert sorted(os.listdir(tmp_path / "out" / "books")) == ["train"]
    with pytest.raises(ValueError, match="'books' split 'validation' has no tfrecord files: validation_fraction is 0"):
        m.pattern("books", "validation")
    with pytest.raises(ValueError, match="no tfrecord shards were written .*Written: \\['train/jsonl'\\]"):
        m.pattern("books", "train")
    assert m.pattern("books", "train", "jsonl") == str(tmp_path / "out" / "books/train/part-*-of-00002.jsonl")


def test_runs_merge_per_component_and_fraction_must_agree(tmp_path):
    write_docs(tmp_path / "web.jsonl", 60, prefix="web")
    write_docs(tmp_path / "books.jsonl", 40, prefix="book")
    out = str(tmp_path / "out")
    run_local([str(tmp_path / "web.jsonl")], out, config(0.2, stages=("exact_dedup",)), progress=False)
    run_local([str(tmp_path / "books.jsonl")], out, config(0.2, stages=("quality",)), progress=False)
    m = M.read_manifest(out)
    assert {n: c.stages for n, c in m.components.items()} == {"books": ("quality",), "web": ("exact_dedup",)}
    assert sum(s.documents for s in m.components["web"].splits.values()) == 60
    # Re-processing a component replaces its entry and keeps the others.
    run_local([str(tmp_path / "web.jsonl")], out, config(0.2, stages=("unicode",)), progress=False)
    again = M.read_manifest(out)
    assert again.components["web"].stages == ("unicode",) and again.components["books"] == m.components["books"]
    # Another fraction cannot share the directory: refused before anything is written.
    before = open(os.path.join(out, M.MANIFEST_NAME)).read()
    write_docs(tmp_path / "news.jsonl", 10)
    with pytest.raises(ValueError, match="validation_fraction=0.2, this run uses validation_fraction=0.5"):
        run_local([str(tmp_path / "news.jsonl")], out, config(0.5), progress=False)
    assert not os.path.exists(os.path.join(out, "news"))
    assert open(os.path.join(out, M.MANIFEST_NAME)).read() == before


def test_read_errors_name_the_path_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{tmp_path}/manifest.json: run `gopher-jax data process --output DIR`"):
        M.read_manifest(str(tmp_path))
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="is not valid JSON"):
        M.read_manifest(str(tmp_path))
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "something_else"}))
    with pytest.raises(ValueError, match="not a gopher_jax corpus manifest \\(format 'something_else'"):
        M.read_manifest(str(tmp_path))
    (tmp_path / "manifest.json").write_text(json.dumps({"format": M.FORMAT, "version": 2}))
    with pytest.raises(ValueError, match="manifest version 2; this gopher_jax reads version 1"):
        M.read_manifest(str(tmp_path))
    (tmp_path / "manifest.json").write_text(json.dumps({"format": M.FORMAT, "version": 1, "components": {}}))
    with pytest.raises(ValueError, match="malformed \\(KeyError: 'validation_fraction'\\)"):
        M.read_manifest(str(tmp_path))
    m = M.CorpusManifest(root=str(tmp_path), validation_fraction=0.0, components={})
    with pytest.raises(ValueError, match="has no component 'books'; it has \\[\\]"):
        m.pattern("books", "train")
    with pytest.raises(ValueError, match="kind='parquet'"):
        m.pattern("books", "train", "parquet")


def test_remote_style_paths_through_the_same_api(tmp_path):
    """tf.io.gfile's ram:// filesystem stands in for gs:// (same code path, no network)."""
    split = M.SplitEntry(documents=3, bytes=30, tfrecord="books/train/part-*-of-00001.tfrecord",
                         jsonl="books/train/part-*-of-00001.jsonl")
    books = M.ComponentEntry(name="books", splits={"train": split, "validation": dataclasses.replace(
        split, documents=0, bytes=0)}, stages=("quality",))
    m = M.CorpusManifest(root="ram://corpus", validation_fraction=0.01, components={"books": books})
    assert M.write_manifest(m, "ram://corpus") == "ram://corpus/manifest.json"
    assert M.read_manifest("ram://corpus/") == m
    assert m.pattern("books", "train") == "ram://corpus/books/train/part-*-of-00001.tfrecord"
    # The in-process runner writes shards and manifest through the same filesystem layer.
    write_docs(tmp_path / "news.jsonl", 30)
    run_local([str(tmp_path / "news.jsonl")], "ram://corpus", config(0.01, tfrecord=True, num_shards=1), progress=False)
    merged = M.read_manifest("ram://corpus")
    assert set(merged.components) == {"books", "news"}
    news = merged.components["news"].splits
    assert news["train"].documents + news["validation"].documents == 30
    assert (news["train"].documents, news["train"].bytes) == recount("ram://corpus", news["train"].jsonl)
    assert len(read_output_records("ram://corpus/news")) == 30
    assert sum(1 for _ in tf.data.TFRecordDataset(tf.io.gfile.glob(merged.pattern("news", "train")))) == \
        news["train"].documents
