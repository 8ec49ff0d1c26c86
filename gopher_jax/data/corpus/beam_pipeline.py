"""The same stages as an Apache Beam pipeline (DirectRunner here; Dataflow, Flink or Spark at scale).

Every transform calls the functions the in-process pipeline calls, and every choice (group
survivors, duplicate-graph components) depends only on the data, so both produce the same
records and stats (tests/data/test_corpus_beam.py checks it on the corpus fixtures, tests/fixtures/corpus).

Scale note: no step holds the corpus or the duplicate graph on one worker. Fuzzy dedup's
candidate pairs are verified with two CoGroupByKeys (no document is shipped to a bucket), the
connected components of the verified duplicate graph are computed by large-star/small-star
rounds (beam_components.py), and losers are marked by a CoGroupByKey on document rank.
"""
from __future__ import annotations

import dataclasses
import json
import os

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from gopher_jax.data.corpus import lsh
from gopher_jax.data.corpus.beam_components import ConnectedComponents
from gopher_jax.data.corpus.components import BeamComponentsConfig
from gopher_jax.data.corpus.config import ProcessConfig
from gopher_jax.data.corpus.decontamination import cached_index, decontaminate
from gopher_jax.data.corpus.document_stages import apply_document_stages
from gopher_jax.data.corpus.documents import Doc
from gopher_jax.data.corpus.exact_dedup import resolve_group, text_key
from gopher_jax.data.corpus.fuzzy_dedup import sketches, verified
from gopher_jax.data.corpus.minhash import permutation_seeds
from gopher_jax.data.corpus.reader import expand_inputs, read_documents
from gopher_jax.data.corpus.stats import Stats
from gopher_jax.data.corpus.writer import (check_output, corpus_manifest, record_bytes, record_line, split_dir,
                                           split_of, tf_example, written_splits)
from gopher_jax.data.manifest import write_manifest

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


def _mark_losers(kv) -> list[Doc]:
    # kv = (rank, {"doc": [the document], "lost": [its survivor's rank] if it is a loser}).
    lost = kv[1]["lost"]
    return [d.dropped("fuzzy_dedup:near_duplicate") if lost else d for d in kv[1]["doc"]]


class FuzzyDedup(beam.PTransform):
    """MinHash-LSH candidates, exact-Jaccard verification, components, one survivor each.

    Returns (documents, {"candidate_pairs": n, "duplicate_pairs": m} as a one-element PCollection).
    """

    def __init__(self, config, components_config: BeamComponentsConfig = BeamComponentsConfig()):
        super().__init__()
        self.config, self.components_config = config, components_config

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
        # Components by large-star/small-star rounds on batches of rank pairs; each non-minimum
        # rank of a component is a loser (components.losers' rule), marked by a join on rank.
        lost = (edges
                | "BatchEdges" >> beam.BatchElements(min_batch_size=1, max_batch_size=4096)
                | "EdgeArrays" >> beam.Map(lambda batch: np.array(batch, dtype=object).reshape(-1, 2))
                | "Components" >> ConnectedComponents(self.components_config)
                | "LoserRanks" >> beam.FlatMap(lambda rows: [(str(n), str(r)) for n, r in rows]))
        marked = ({"doc": alive | "KeyByRank" >> beam.Map(lambda d: (d.rank, d)), "lost": lost}
                  | "JoinLosers" >> beam.CoGroupByKey()
                  | "MarkLosers" >> beam.FlatMap(_mark_losers))
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
    """Adds the corpus pipeline to `pipeline`: files -> per-(component, split) shards, stats json, manifest."""
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
        docs, info = docs | "FuzzyDedup" >> FuzzyDedup(config.dedup, config.beam_components)
    if "decontam" in stages:
        docs = docs | "Decontaminate" >> beam.Map(
            lambda d: decontaminate(d, cached_index(config.decontam, config.dedup)) if d.alive else d)
    stats = docs | "Stats" >> beam.CombineGlobally(_StatsFn())
    if info is not None:
        stats = stats | "AddDedupPairs" >> beam.Map(
            lambda s, i: {**s, "dedup_pairs": dict(sorted(i.items()))}, i=beam.pvalue.AsSingleton(info))
    stats | "WriteStats" >> beam.Map(_write_json, stats_path)
    _write_splits(docs, sorted({source for source, _ in files}), output_dir, config)


def _keyed_records(doc: Doc, fraction: float) -> list:
    split = split_of(doc.source, doc.id, fraction)
    return [((doc.source, split), rec) for rec in doc.output_records()]


def _manifest_writer(counts: dict, output_dir: str, components: list[str], config: ProcessConfig, *finalized):
    # `finalized` (the shard writes' output file names, as side inputs) is unused: it only makes
    # this step wait until every shard is in place.
    p = config.pipeline
    write_manifest(corpus_manifest(output_dir, components, counts, p.num_shards, p.write_tfrecord,
                                   p.validation_fraction, config.stages), output_dir)


def _write_splits(docs, components: list[str], output_dir: str, config: ProcessConfig) -> None:
    """Writes each (component, split)'s records with its own sinks, then the manifest.

    The components are known at construction (from the inputs), so a Partition routes records
    to one WriteToText (+ WriteToTFRecord) per (component, split). The manifest is written by a
    final transform, on a worker, once every sink has finalized (their outputs are its side
    inputs): it works on remote runners without the launcher waiting for the job.
    """
    p = config.pipeline
    keys = [(c, s) for c in components for s in written_splits(p.validation_fraction)]
    index = {k: i for i, k in enumerate(keys)}
    records = docs | "Records" >> beam.FlatMap(_keyed_records, p.validation_fraction)
    parts = records | "BySplit" >> beam.Partition(lambda kv, n, index: index[kv[0]], len(keys), index)
    finalized = []
    for (component, split), part in zip(keys, parts):
        name, prefix = f"[{component}:{split}]", os.path.join(split_dir(output_dir, component, split), "part")
        recs = part | f"Values{name}" >> beam.Values()
        finalized.append(
            recs | f"JsonLines{name}" >> beam.Map(record_line)
                 | f"WriteJsonl{name}" >> beam.io.WriteToText(
                     prefix, file_name_suffix=".jsonl", num_shards=p.num_shards,
                     shard_name_template="-SSSSS-of-NNNNN"))
        if p.write_tfrecord:
            finalized.append(
                recs | f"TfExamples{name}" >> beam.Map(lambda r: tf_example(r["text"]))
                     | f"WriteTfrecord{name}" >> beam.io.WriteToTFRecord(
                         prefix, file_name_suffix=".tfrecord", num_shards=p.num_shards,
                         shard_name_template="-SSSSS-of-NNNNN"))
    counts = (records
              | "RecordSizes" >> beam.Map(lambda kv: (kv[0], (1, record_bytes(kv[1]))))
              | "SplitSizes" >> beam.CombinePerKey(beam.combiners.TupleCombineFn(sum, sum))
              | "SizesDict" >> beam.combiners.ToDict())
    counts | "WriteManifest" >> beam.Map(_manifest_writer, output_dir, components, config,
                                         *[beam.pvalue.AsList(f) for f in finalized])


def run_beam(inputs: list[str], output_dir: str, config: ProcessConfig, stats_path: str | None = None,
             runner: str = "direct", pipeline_args: list[str] = ()) -> Stats | None:
    """Runs the pipeline on a Beam runner; returns the Stats when the run finished and is readable.

    Writes output_dir/<component>/<split>/ shards, stats_path and (from the job's last step,
    idempotent if retried) the merged output_dir/manifest.json, as `run_local` does.
    pipeline_args are passed to Beam (e.g. --project, --region, --temp_location for Dataflow).
    """
    if runner not in RUNNERS:
        raise ValueError(f"--runner={runner!r}: expected one of {sorted(RUNNERS)}")
    stats_path = stats_path or os.path.join(output_dir, "stats.json")
    files = expand_inputs(inputs)
    check_output(files, output_dir, config.pipeline.validation_fraction)  # before the job starts
    options = PipelineOptions(list(pipeline_args) + [f"--runner={RUNNERS[runner]}"])
    with beam.Pipeline(options=options) as p:
        build(p, files, output_dir, config, stats_path)
    if FileSystems.exists(stats_path):
        with FileSystems.open(stats_path) as f:
            stats = Stats.from_json(json.loads(f.read().decode("utf-8")))
        stats.check()
        return stats
    return None
