"""Fuzzy deduplication: MinHash over word n-grams, LSH banding, exact Jaccard verification,
connected components, one survivor per component chosen by dataset priority.

Defaults: 13-gram shingles and Jaccard >= 0.8 (Gopher A.1.1); 200 hashes in 25 bands of 8 rows,
so a pair exactly at the threshold is a candidate with probability 0.990 (MT-NLG §3.1's 260 hashes
in 20 bands, gin_configs/data/mtnlg.gin, give 0.68; docs/data_pipeline.md "Dedup quality").
The building blocks here are shared by the in-process and the Beam pipelines.
"""
from __future__ import annotations

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
    # 25 bands x 8 rows: P(candidate) = 1-(1-J^8)^25 = 0.990 at J=0.80, 0.9967 at 0.82 (Gopher's
    # threshold itself; the paper gives no banding). MT-NLG §3.1: 260 hashes in 20 bands (0.68).
    num_perm: int = 200
    bands: int = 25
    threshold: float = 0.8  # Gopher A.1.1 / MT-NLG: duplicates at Jaccard >= 0.8
    seed: int = 1  # MinHash hash functions; same seed => same signatures everywhere
    max_all_pairs: int = 100  # buckets larger than this are paired by a sliding window
    window: int = 50  # neighbours per member in such buckets
    # Lower survives a duplicate group (MT-NLG: "chosen by dataset priority"); others get 100.
    dataset_priority: tuple[tuple[str, int], ...] = ()

    def __post_init__(self):
        if self.bands < 1 or self.num_perm % self.bands:
            raise ValueError(f"DedupConfig: num_perm={self.num_perm} must be a positive multiple of "
                             f"bands={self.bands} (default 200 = 25 bands x 8 rows)")
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


def verified(a: np.ndarray, b: np.ndarray, threshold: float, distinct: bool = False) -> bool:
    """Returns True when two shingle sets' exact Jaccard is >= threshold (cheap size bound first).

    a and b may contain repeats unless distinct=True (both already sorted and repeat-free).
    """
    if not distinct:
        a, b = ngrams.unique_sorted(a), ngrams.unique_sorted(b)
    small, large = (a, b) if len(a) <= len(b) else (b, a)
    if len(small) < threshold * len(large):  # J <= |small| / |large|
        return False
    if len(small) == 0:
        return False
    # Both sorted: look each shingle of the smaller set up in the larger one.
    at = np.searchsorted(large, small)
    inter = int(np.count_nonzero(large[np.minimum(at, len(large) - 1)] == small))
    return inter / (len(a) + len(b) - inter) >= threshold


def duplicate_edges(sketches: dict, config: DedupConfig) -> tuple[list[tuple], int]:
    """Returns (verified duplicate edges between ranks, number of candidate pairs checked)."""
    ranks = list(sketches)
    pairs = set()
    if ranks:
        # Buckets are runs of equal (band, key) after one sort; only shared buckets reach Python.
        keys = np.stack([sketches[r][1] for r in ranks]).view(np.int64)
        band = np.broadcast_to(np.arange(keys.shape[1]), keys.shape).ravel()
        doc = np.repeat(np.arange(len(ranks)), keys.shape[1])
        keys = keys.ravel()
        order = np.lexsort((doc, keys, band))
        k, b = keys[order], band[order]
        new_run = np.concatenate(([True], (k[1:] != k[:-1]) | (b[1:] != b[:-1])))
        starts = np.flatnonzero(new_run)
        sizes = np.diff(np.append(starts, len(order)))
        members_of = doc[order]
        for start, size in zip(starts[sizes > 1].tolist(), sizes[sizes > 1].tolist()):
            members = [ranks[i] for i in members_of[start:start + size].tolist()]
            pairs.update(lsh.bucket_pairs(members, config.max_all_pairs, config.window))
    distinct = {}  # each document's sorted distinct shingles, made once however many pairs it is in

    def shingles_of(rank):
        if rank not in distinct:
            distinct[rank] = ngrams.unique_sorted(sketches[rank][0])
        return distinct[rank]

    edges = [(a, b) for a, b in sorted(pairs)
             if verified(shingles_of(a), shingles_of(b), config.threshold, distinct=True)]
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
