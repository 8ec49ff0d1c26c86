"""The whole pipeline in one process: read, per-document stages, dedup, decontaminate, write."""
from __future__ import annotations

import dataclasses
import json

from tqdm import tqdm

from gopher_jax.data.corpus.config import ProcessConfig
from gopher_jax.data.corpus.decontamination import cached_index, decontaminate
from gopher_jax.data.corpus.document_stages import apply_document_stages
from gopher_jax.data.corpus.exact_dedup import exact_dedup
from gopher_jax.data.corpus.fuzzy_dedup import fuzzy_dedup
from gopher_jax.data.corpus.reader import expand_inputs, read_documents
from gopher_jax.data.corpus.stats import Stats, stats_of
from gopher_jax.data.corpus.writer import check_output, corpus_manifest, write_shards
from gopher_jax.data.manifest import atomic_write_text, write_manifest


def process_documents(docs, config: ProcessConfig, progress: bool = False) -> tuple[list, dict]:
    """Returns (every document with its outcome, dedup pair counts) for an iterable of Docs."""
    stages = config.stages
    out = []
    for doc in tqdm(docs, desc="filter", unit=" docs", disable=not progress):
        doc = apply_document_stages(doc, config)
        # Dropped documents only need their outcome; freeing their text bounds memory.
        out.append(doc if doc.alive else dataclasses.replace(doc, text=""))
    info = {}
    if "exact_dedup" in stages:
        out = exact_dedup(out)
    if "fuzzy_dedup" in stages:
        out, info = fuzzy_dedup(out, config.dedup, progress=progress)
    if "decontam" in stages:
        index = cached_index(config.decontam, config.dedup)
        out = [decontaminate(d, index) if d.alive else d
               for d in tqdm(out, desc="decontaminate", unit=" docs", disable=not progress)]
    return out, info


def run_local(inputs: list[str], output_dir: str, config: ProcessConfig, stats_path: str | None = None,
              progress: bool = True) -> Stats:
    """Runs every selected stage in this process; returns the Stats (also saved to stats_path).

    Writes output_dir/<component>/<split>/ shards and merges this run's components into
    output_dir/manifest.json (written last, so a manifest never names unwritten shards).
    """
    p = config.pipeline
    files = expand_inputs(inputs)
    components = check_output(files, output_dir, p.validation_fraction)
    docs = (d for source, path in files for d in read_documents(source, path, p.text_split))
    out, info = process_documents(docs, config, progress)
    counts = write_shards(out, output_dir, components, p.num_shards, p.write_tfrecord, p.validation_fraction)
    stats = stats_of(out)
    stats.dedup_pairs.update(info)
    stats.check()
    if stats_path:
        atomic_write_text(stats_path, json.dumps(stats.to_json(), indent=2))
    write_manifest(corpus_manifest(output_dir, components, counts, p.num_shards, p.write_tfrecord,
                                   p.validation_fraction, config.stages), output_dir)
    return stats
