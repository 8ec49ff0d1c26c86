"""The same stages as an Apache Beam pipeline (DirectRunner here; Dataflow, Flink or Spark at scale).

Every transform calls the functions the in-process pipeline calls, and every choice (group
survivors, duplicate-graph components) depends only on the data, so both produce the same
records and stats (tests/data/test_corpus_beam.py checks it on ../shared/data/corpus).

Scale note: fuzzy dedup's candidate pairs are verified with two CoGroupByKeys (no document is
shipped to a bucket), but the connected components of the verified duplicate graph are computed
on one worker from the edge list. Edges are far fewer than documents, yet at billions of
documents an iterative distributed components algorithm would replace `_Losers`.
"""
from __future__ import annotations

import dataclasses
import json
import os

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from gopher_jax.data.corpus import components, lsh
from gopher_jax.data.corpus.config import ProcessConfig
from gopher_jax.data.corpus.decontamination import cached_index, decontaminate
from gopher_jax.data.corpus.document_stages import apply_document_stages
from gopher_jax.data.corpus.documents import Doc
from gopher_jax.data.corpus.exact_dedup import resolve_group, text_key
from gopher_jax.data.corpus.fuzzy_dedup import sketches, verified
from gopher_jax.data.corpus.minhash import permutation_seeds
from gopher_jax.data.corpus.reader import expand_inputs, read_documents
from gopher_jax.data.corpus.stats import Stats
from gopher_jax.data.corpus.writer import record_line, tf_example

RUNNERS = {"direct": "DirectRunner", "dataflow": "DataflowRunner", "flink": "FlinkRunner",
           "spark": "SparkRunner", "portable": "PortableRunner"}


def _strip_dropped(doc: Doc) -> Doc:
    # Same as the in-process pipeline: a dropped document only carries its outcome onwards.
    return doc if doc.alive else dataclasses.replace(doc, text="")


def _split_alive(pcoll, label: str):
    parts = pcoll | f"{label}Split" >> beam.Partition(lambda d, _: 0 if d.alive else 1, 2)
    return parts[0], parts[1]


class ExactDedup(beam.PTransform):
    """Groups alive documents by normalised-text hash; keeps the lowest rank of each group."""

    def expand(self, docs):
        alive, dead = _split_alive(docs, "Exact")
        kept = (alive
                | "TextKey" >> beam.Map(lambda d: (text_key(d.text), d))
                | "GroupByText" >> beam.GroupByKey()
                | "Survivor" >> beam.FlatMap(lambda kv: resolve_group(kv[1])))
        return (kept, dead) | "ExactMerge" >> beam.Flatten()


class _Sketch(beam.DoFn):
    def __init__(self, config):
        self.config = config

    def setup(self):
        self.seeds = permutation_seeds(self.config.num_perm, self.config.seed)

    def process(self, batch):
        for d, sk in zip(batch, sketches([d.text for d in batch], self.config, self.seeds)):
            if sk is not None:
                yield d.rank, sk


class _Losers(beam.CombineFn):
    """Collects verified edges; outputs {loser rank: survivor rank} of the duplicate graph."""

    def create_accumulator(self):
        return []

    def add_input(self, acc, edge):
        acc.append(edge)
        return acc

    def merge_accumulators(self, accs):
        return [e for a in accs for e in a]

    def extract_output(self, acc):
        return components.losers(sorted(acc))


class FuzzyDedup(beam.PTransform):
    """MinHash-LSH candidates, exact-Jaccard verification, components, one survivor each.

    Returns (documents, {"candidate_pairs": n, "duplicate_pairs": m} as a one-element PCollection).
    """

    def __init__(self, config):
        super().__init__()
        self.config = config

    def expand(self, docs):
        c = self.config
        alive, dead = _split_alive(docs, "Fuzzy")
        sk = (alive
              | "BatchForSketch" >> beam.BatchElements(min_batch_size=1, max_batch_size=256)
              | "Sketch" >> beam.ParDo(_Sketch(c)))
        shingles = sk | "Shingles" >> beam.Map(lambda kv: (kv[0], kv[1][0]))
        pairs = (sk
                 | "BandKeys" >> beam.FlatMap(
                     lambda kv: [((band, key), kv[0]) for band, key in enumerate(kv[1][1].view(np.int64).tolist())])
                 | "GroupByBucket" >> beam.GroupByKey()
                 | "BucketPairs" >> beam.FlatMap(
                     lambda kv: lsh.bucket_pairs(list(kv[1]), c.max_all_pairs, c.window) if len(kv[1]) > 1 else [])
                 | "DistinctPairs" >> beam.Distinct())
        # Verification: attach a's shingles, then b's, then compare (no bucket carries documents).
        with_a = ({"b": pairs, "sh": shingles}
                  | "JoinA" >> beam.CoGroupByKey()
                  | "KeyByB" >> beam.FlatMap(
                      lambda kv: [(b, (kv[0], sh)) for sh in kv[1]["sh"] for b in kv[1]["b"]]))
        edges = ({"a": with_a, "sh": shingles}
                 | "JoinB" >> beam.CoGroupByKey()
                 | "Verify" >> beam.FlatMap(
                     lambda kv: [(a, kv[0]) for sh_b in kv[1]["sh"] for a, sh_a in kv[1]["a"]
                                 if verified(sh_a, sh_b, c.threshold)]))
        lost = edges | "Components" >> beam.CombineGlobally(_Losers())
        marked = alive | "MarkLosers" >> beam.Map(
            lambda d, lost: d.dropped("fuzzy_dedup:near_duplicate") if d.rank in lost else d,
            lost=beam.pvalue.AsSingleton(lost))
        n_pairs = pairs | "CountCandidates" >> beam.combiners.Count.Globally()
        n_edges = edges | "CountEdges" >> beam.combiners.Count.Globally()
        info = (n_pairs | "PairInfo" >> beam.Map(
            lambda c, e: {"candidate_pairs": c, "duplicate_pairs": e}, e=beam.pvalue.AsSingleton(n_edges)))
        return (marked, dead) | "FuzzyMerge" >> beam.Flatten(), info


class _StatsFn(beam.CombineFn):
    def create_accumulator(self):
        return Stats()

    def add_input(self, acc, doc):
        acc.add(doc)
        return acc

    def merge_accumulators(self, accs):
        out = Stats()
        for a in accs:
            out.merge(a)
        return out

    def extract_output(self, acc):
        return acc.to_json()


def _write_json(obj: dict, path: str) -> None:
    with FileSystems.create(path) as f:
        f.write(json.dumps(obj, indent=2).encode("utf-8"))


def build(pipeline, files: list[tuple[str, str]], output_dir: str, config: ProcessConfig, stats_path: str):
    """Adds the corpus pipeline to `pipeline`: files -> output shards and a stats json."""
    stages, split = config.stages, config.pipeline.text_split
    docs = (pipeline
            | "Files" >> beam.Create(files)
            | "SpreadFiles" >> beam.Reshuffle()
            | "Read" >> beam.FlatMap(lambda sp: read_documents(sp[0], sp[1], split))
            | "DocumentStages" >> beam.Map(apply_document_stages, config)
            | "StripDropped" >> beam.Map(_strip_dropped))
    if "exact_dedup" in stages:
        docs = docs | "ExactDedup" >> ExactDedup()
    info = None
    if "fuzzy_dedup" in stages:
        docs, info = docs | "FuzzyDedup" >> FuzzyDedup(config.dedup)
    if "decontam" in stages:
        docs = docs | "Decontaminate" >> beam.Map(
            lambda d: decontaminate(d, cached_index(config.decontam, config.dedup)) if d.alive else d)
    stats = docs | "Stats" >> beam.CombineGlobally(_StatsFn())
    if info is not None:
        stats = stats | "AddDedupPairs" >> beam.Map(
            lambda s, i: {**s, "dedup_pairs": dict(sorted(i.items()))}, i=beam.pvalue.AsSingleton(info))
    stats | "WriteStats" >> beam.Map(_write_json, stats_path)
    records = docs | "Records" >> beam.FlatMap(lambda d: d.output_records())
    prefix, n = os.path.join(output_dir, "part"), config.pipeline.num_shards
    (records | "JsonLines" >> beam.Map(record_line)
             | "WriteJsonl" >> beam.io.WriteToText(prefix, file_name_suffix=".jsonl", num_shards=n,
                                                   shard_name_template="-SSSSS-of-NNNNN"))
    if config.pipeline.write_tfrecord:
        (records | "TfExamples" >> beam.Map(lambda r: tf_example(r["text"]))
                 | "WriteTfrecord" >> beam.io.WriteToTFRecord(prefix, file_name_suffix=".tfrecord", num_shards=n,
                                                              shard_name_template="-SSSSS-of-NNNNN"))


def run_beam(inputs: list[str], output_dir: str, config: ProcessConfig, stats_path: str | None = None,
             runner: str = "direct", pipeline_args: list[str] = ()) -> Stats | None:
    """Runs the pipeline on a Beam runner; returns the Stats when the run finished and is readable.

    pipeline_args are passed to Beam (e.g. --project, --region, --temp_location for Dataflow).
    """
    if runner not in RUNNERS:
        raise ValueError(f"--runner={runner!r}: expected one of {sorted(RUNNERS)}")
    stats_path = stats_path or os.path.join(output_dir, "stats.json")
    files = expand_inputs(inputs)
    options = PipelineOptions(list(pipeline_args) + [f"--runner={RUNNERS[runner]}"])
    with beam.Pipeline(options=options) as p:
        build(p, files, output_dir, config, stats_path)
    if FileSystems.exists(stats_path):
        with FileSystems.open(stats_path) as f:
            stats = Stats.from_json(json.loads(f.read().decode("utf-8")))
        stats.check()
        return stats
    return None
