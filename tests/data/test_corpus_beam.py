"""Beam DirectRunner output == in-process output, on every corpus fixture (tests/fixtures/corpus) plus a
crafted shard with duplicates, near-duplicates, malformed lines and a contaminated document."""
import glob
import json

import pytest

from gopher_jax.data.corpus import config as C
from gopher_jax.data.corpus.beam_pipeline import run_beam
from gopher_jax.data.corpus.local_pipeline import run_local
from gopher_jax.data.corpus.writer import read_output_records
from gopher_jax.data.manifest import read_manifest
from tests.fixtures.paths import C4, CORPUS, lambada_passages


def crafted_inputs(tmp_path):
    with open(C4) as f:
        c4 = [json.loads(line) for line in f]
    long_docs = [r for r in c4 if len(r["text"]) > 3000][:3]
    lam = lambada_passages()
    # One eval item longer than short_docs' 512 characters (the fixture's passages are shorter), so the
    # document that copies it reaches decontamination: the two longest passages as one.
    a, b = sorted(lam, key=lambda r: len(r["context"]))[-2:]
    passage = {"context": a["context"] + "\n\n" + b["context"], "continuation": b["continuation"]}
    eval_path = tmp_path / "eval.jsonl"
    with open(eval_path, "w") as f:
        for r in lam + [passage]:
            f.write(json.dumps(r) + "\n")
    words = long_docs[1]["text"].split(" ")
    words[len(words) // 2] = "CHANGED"
    rows = [
        {"text": long_docs[0]["text"].upper().replace(" ", "  "), "url": "exact-dup"},
        {"text": " ".join(words), "url": "near-dup"},
        {"text": passage["context"] + " " + passage["continuation"] + " The end of the story.", "url": "contaminated"},
        # Words of a real document in reverse order: fresh 13-grams, so not a near-duplicate.
        {"text": " ".join(reversed(long_docs[2]["text"].split(" "))) + "\n\n" + passage["context"],
         "url": "contains-a-passage"},
    ]
    shard = tmp_path / "crafted.jsonl"
    with open(shard, "wb") as f:
        for r in rows:
            f.write((json.dumps(r) + "\n").encode())
        f.write(b"\xff broken\n{not json}\n{\"no_text\": 1}\n")
    return [f"crafted={shard}"], str(eval_path)


@pytest.mark.parametrize("mode", ["gopher", "mtnlg"])
def test_beam_equals_in_process(tmp_path, mode):
    extra, eval_path = crafted_inputs(tmp_path)
    stages = C.STAGES if mode == "gopher" else ("exact_dedup", "fuzzy_dedup", "decontam")
    inputs = [CORPUS] + extra if mode == "gopher" else [C4] + extra
    # gopher: a large held-out share so every component has both splits; mtnlg: no validation split.
    fraction = 0.25 if mode == "gopher" else 0.0
    cfg = C.ProcessConfig(pipeline=C.PipelineConfig(stages=stages, num_shards=3, write_tfrecord=(mode == "gopher"),
                                                    validation_fraction=fraction),
                          decontam=C.DecontamConfig(mode=mode, eval_paths=(eval_path,)))
    local = run_local(inputs, str(tmp_path / "local"), cfg, str(tmp_path / "local.json"), progress=False)
    beam = run_beam(inputs, str(tmp_path / "beam"), cfg, str(tmp_path / "beam.json"))
    assert beam == local
    assert json.load(open(tmp_path / "beam.json")) == json.load(open(tmp_path / "local.json"))
    records = read_output_records(str(tmp_path / "local"))
    assert records == read_output_records(str(tmp_path / "beam")) and len(records) == local.records_written
    # Same split for every document in both runners; both manifests count exactly their files.
    manifest = read_manifest(str(tmp_path / "beam"))
    assert manifest.to_json() == read_manifest(str(tmp_path / "local")).to_json()
    assert set(manifest.components) == set(local.read_by_source)
    for name, component in manifest.components.items():
        assert component.stages == cfg.stages
        for split, entry in component.splits.items():
            lines = read_output_records(str(tmp_path / "beam" / name / split))
            assert lines == read_output_records(str(tmp_path / "local" / name / split))
            assert (entry.documents, entry.bytes) == (len(lines), sum(len(json.loads(r)["text"].encode()) for r in lines))
            if fraction == 0 and split == "validation":
                assert entry.jsonl is None and not (tmp_path / "beam" / name / split).exists()
            else:
                assert len(glob.glob(manifest.pattern(name, split, "jsonl"))) == 3  # num_shards, empty ones too
    if fraction:
        assert 0.15 < sum(c.splits["validation"].documents for c in manifest.components.values()) / len(records) < 0.35
    print(f"\n{mode}: {local.read} read, {local.kept} kept, {local.records_written} records; dropped {dict(local.dropped)}")
    assert local.dropped["exact_dedup:duplicate"] == 1 and local.dropped["fuzzy_dedup:near_duplicate"] == 1
    assert local.dedup_pairs["duplicate_pairs"] == 1
    assert local.dropped["bad_input:invalid_utf8"] == 1 and local.dropped["bad_input:missing_text"] == 1
    if mode == "gopher":
        assert local.dropped["decontam:eval_overlap"] == 1
        assert local.read_by_source["gutenberg"] == 8 and local.read_by_source["wikitext2"] == 9
        # The TFRecord shards are what seqio reads: same texts as the jsonl shards.
        import seqio
        import tensorflow as tf
        source = seqio.TFExampleDataSource(
            {split: [manifest.pattern(c, split) for c in manifest.components] for split in ("train", "validation")},
            feature_description={"text": tf.io.FixedLenFeature([], tf.string)})
        texts = sorted(ex["text"].decode() for split in ("train", "validation")
                       for ex in source.get_dataset(split, shuffle=False).as_numpy_iterator())
        assert texts == sorted(json.loads(r)["text"] for r in records)
    else:
        assert local.changed["decontam:cut"] >= 1 and local.records_written >= local.kept
