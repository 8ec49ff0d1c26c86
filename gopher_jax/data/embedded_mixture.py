"""The embedded default corpus processed like MassiveText: filtered, deduplicated, split, with a manifest.

`ensure_processed()` runs `gopher-jax data process`'s in-process pipeline on each component of
`embedded_corpus` and returns the output directory (the same layout and manifest.json as any
`data process` output), cached under the cache dir. Stages follow Gopher App. A.1: the quality
and repetition filters are for MassiveWeb only; every subset is deduplicated. No test-set filter
runs here, because no evaluation set ships with the installed packages.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys

from gopher_jax.data import embedded_corpus

# Gopher App. A.1: MassiveWeb gets the content and repetition filters; all subsets get dedup.
STAGES = {
    "massiveweb": ("unicode", "langid", "quality", "repetition", "exact_dedup", "fuzzy_dedup"),
    "books": ("exact_dedup", "fuzzy_dedup"),
    "news": ("exact_dedup", "fuzzy_dedup"),
    "wikipedia": ("exact_dedup", "fuzzy_dedup"),
    "github": ("exact_dedup", "fuzzy_dedup"),
}
# A larger held-out share than pod-scale data needs (0.01): components here have 66-350 documents,
# and every component should have held-out text to report bits-per-byte on.
VALIDATION_FRACTION = 0.1
NUM_SHARDS = 2


def _config(component: str):
    from gopher_jax.data.corpus.config import PipelineConfig, ProcessConfig
    pipeline = PipelineConfig(stages=STAGES[component], num_shards=NUM_SHARDS, write_tfrecord=True,
                              validation_fraction=VALIDATION_FRACTION)
    return dataclasses.replace(ProcessConfig(), pipeline=pipeline)


def processed_dir(cache_dir: str | None = None) -> str:
    """Returns where the processed embedded corpus lives (keyed by corpus and every stage setting)."""
    cache_dir = cache_dir or embedded_corpus.default_cache_dir()
    settings = repr([(c, _config(c)) for c in embedded_corpus.COMPONENTS]).encode()
    key = hashlib.sha256(settings).hexdigest()[:10]
    return os.path.join(cache_dir, embedded_corpus.corpus_key(), f"processed-{key}")


def ensure_processed(cache_dir: str | None = None, progress: bool = False) -> str:
    """Returns the processed output directory (with manifest.json), building it on first use (~10 s)."""
    from gopher_jax.data.corpus.local_pipeline import run_local
    from gopher_jax.data.manifest import MANIFEST_NAME

    out = processed_dir(cache_dir)
    if os.path.isfile(os.path.join(out, MANIFEST_NAME)):
        return out
    print(f"building the embedded corpus (filters, dedup, splits) in {out}", file=sys.stderr, flush=True)
    tmp = f"{out}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    for component in embedded_corpus.COMPONENTS:
        raw = embedded_corpus.raw_component_path(component, cache_dir)
        run_local([f"{component}={raw}"], tmp, _config(component),
                  stats_path=os.path.join(tmp, "stats", f"{component}.json"), progress=progress)
    try:
        os.rename(tmp, out)
    except OSError:  # another process finished first: its result is identical
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def documents(split: str = "train", cache_dir: str | None = None) -> list[str]:
    """Returns the processed texts of every component's `split` ("train" or "validation"), in a fixed order."""
    import glob

    from gopher_jax.data.manifest import read_manifest

    manifest = read_manifest(ensure_processed(cache_dir))
    texts = []
    for component in sorted(manifest.components):
        if manifest.components[component].splits.get(split) is None:
            raise ValueError(f"unknown split {split!r}; the embedded corpus has "
                             f"{sorted(manifest.components[component].splits)}")
        if not manifest.components[component].splits[split].documents:
            continue
        for path in sorted(glob.glob(manifest.pattern(component, split, "jsonl"))):
            with open(path, encoding="utf-8") as f:
                texts += [json.loads(line)["text"] for line in f]
    return texts
