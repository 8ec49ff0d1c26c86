"""The whole pipeline in one process: read, per-document stages, dedup, decontaminate, write."""
from __future__ import annotations

import dataclasses
import os

from tqdm import tqdm

from gopher_jax.data.corpus.config import ProcessConfig
from gopher_jax.data.corpus.decontamination import cached_index, decontaminate
from gopher_jax.data.corpus.document_stages import apply_document_stages
from gopher_jax.data.corpus.exact_dedup import exact_dedup
from gopher_jax.data.corpus.fuzzy_dedup import fuzzy_dedup
from gopher_jax.data.corpus.reader import expand_inputs, read_documents
from gopher_jax.data.corpus.stats import Stats, stats_of
from gopher_jax.data.corpus.writer import write_shards


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
    """Runs every selected stage in this process; returns the Stats (also saved to stats_path)."""
    files = expand_inputs(inputs)
    docs = (d for source, path in files for d in read_documents(source, path, config.pipeline.text_split))
    out, info = process_documents(docs, config, progress)
    write_shards(out, output_dir, config.pipeline.num_shards, config.pipeline.write_tfrecord)
    stats = stats_of(out)
    stats.dedup_pairs.update(info)
    stats.check()
    if stats_path:
        os.makedirs(os.path.dirname(os.path.abspath(stats_path)), exist_ok=True)
        stats.save(stats_path)
    return stats
