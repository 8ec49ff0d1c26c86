"""Fuzzy deduplication: MinHash over word n-grams, LSH banding, exact Jaccard verification,
connected components, one survivor per component chosen by dataset priority.

Defaults: 13-gram shingles and Jaccard >= 0.8 (Gopher A.1.1); 260 hashes in 20 bands (MT-NLG §3.1).
The building blocks here are shared by the in-process and the Beam pipelines.
"""
from __future__ import annotations

import collections
import dataclasses

import gin
import numpy as np
from tqdm import tqdm

from gopher_jax.data.corpus import components, lsh, minhash, ngrams
from gopher_jax.data.corpus.documents import Doc


@gin.configurable(module="corpus")
@dataclasses.dataclass(frozen=True)
class DedupConfig:
    """MinHash-LSH dedup parameters and the dataset priority that picks survivors."""

    ngram: int = 13  # Gopher A.1.1 and MT-NLG §3.1: word 13-grams
    num_perm: int = 260  # MT-NLG §3.1: 260 hashes ...
    bands: int = 20  # ... in 20 bands (13 rows each)
    threshold: float = 0.8  # Gopher A.1.1 / MT-NLG: duplicates at Jaccard >= 0.8
    seed: int = 1  # MinHash hash functions; same seed => same signatures everywhere
    max_all_pairs: int = 100  # buckets larger than this are paired by a sliding window
    window: int = 50  # neighbours per member in such buckets
    # Lower survives a duplicate group (MT-NLG: "chosen by dataset priority"); others get 100.
    dataset_priority: tuple[tuple[str, int], ...] = ()

    def __post_init__(self):
        if self.bands < 1 or self.num_perm % self.bands:
            raise ValueError(f"DedupConfig: num_perm={self.num_perm} must be a positive multiple of "
                             f"bands={self.bands} (MT-NLG: 260 = 20 bands x 13 rows)")
        bad = [(s, p) for s, p in self.dataset_priority if not 0 <= p < 1_000_000]
        if bad:
            raise ValueError(f"DedupConfig.dataset_priority {bad}: priorities must be in 0..999999")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"DedupConfig.threshold={self.threshold} must be in (0, 1]")

    @property
    def rows(self) -> int:
        return self.num_perm // self.bands

    def priority(self, source: str) -> int:
        return dict(self.dataset_priority).get(source, 100)


def sketches(texts: list[str], config: DedupConfig, seeds: np.ndarray) -> list[tuple | None]:
    """Returns per text (its n-gram hashes, band keys (bands,)), or None for a text without words.

    The n-gram hashes keep repeats: MinHash ignores them, and only the few documents in a
    candidate pair pay for deduplicating them (in `verified`).
    """
    sh = ngrams.shingles_batch(texts, config.ngram, unique=False)
    nonempty = [i for i, s in enumerate(sh) if len(s)]
    keys = lsh.band_keys(minhash.signatures([sh[i] for i in nonempty], seeds), config.bands, config.rows)
    out: list[tuple | None] = [None] * len(texts)
    for row, i in enumerate(nonempty):
        out[i] = (sh[i], keys[row])
    return out


def verified(a: np.ndarray, b: np.ndarray, threshold: float) -> bool:
    """Returns True when two shingle sets' exact Jaccard is >= threshold (cheap size bound first).

    a and b may contain repeats; they are made sets here.
    """
    a, b = np.unique(a), np.unique(b)
    small, large = sorted((len(a), len(b)))
    if small < threshold * large:  # J <= |small| / |large|
        return False
    return ngrams.jaccard(a, b) >= threshold


def duplicate_edges(sketches: dict, config: DedupConfig) -> tuple[list[tuple], int]:
    """Returns (verified duplicate edges between ranks, number of candidate pairs checked)."""
    buckets = collections.defaultdict(list)
    for rank, (_, keys) in sketches.items():
        for band, key in enumerate(keys.view(np.int64).tolist()):
            buckets[(band, key)].append(rank)
    pairs = set()
    for members in buckets.values():
        if len(members) > 1:
            pairs.update(lsh.bucket_pairs(members, config.max_all_pairs, config.window))
    edges = [(a, b) for a, b in sorted(pairs)
             if verified(sketches[a][0], sketches[b][0], config.threshold)]
    return edges, len(pairs)


def fuzzy_dedup(docs: list[Doc], config: DedupConfig, batch: int = 256,
                progress: bool = False) -> tuple[list[Doc], dict]:
    """Returns (docs with near-duplicates of a lower-rank document dropped, {pair counts})."""
    seeds = minhash.permutation_seeds(config.num_perm, config.seed)
    alive = [d for d in docs if d.alive]
    table = {}
    for start in tqdm(range(0, len(alive), batch), desc="minhash", unit=" batches", disable=not progress):
        chunk = alive[start:start + batch]
        for d, sk in zip(chunk, sketches([d.text for d in chunk], config, seeds)):
            if sk is not None:
                table[d.rank] = sk
    edges, n_candidates = duplicate_edges(table, config)
    lost = components.losers(edges)
    out = [d.dropped("fuzzy_dedup:near_duplicate") if d.alive and d.rank in lost else d for d in docs]
    return out, {"candidate_pairs": n_candidates, "duplicate_pairs": len(edges)}
