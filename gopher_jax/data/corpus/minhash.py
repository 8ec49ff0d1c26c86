"""MinHash signatures computed with numpy (see docs/decisions/minhash_numpy.md).

Each of the `num_perm` hash functions is x -> a_k * x + b_k (mod 2^64, a_k odd): a bijection of
uint64 per k. Shingles are already splitmix64 outputs, so this cheap multiply-add family behaves
like random permutations for the minimum (tests/data/test_corpus_dedup.py measures the estimate
error, recall and false-positive rate); it is 3.5x cheaper than re-mixing every shingle.
"""
from __future__ import annotations

import numpy as np


def permutation_seeds(num_perm: int, seed: int = 1) -> np.ndarray:
    """Returns (num_perm, 2) uint64 (a_k odd, b_k) defining the hash functions (same everywhere)."""
    ab = np.random.Generator(np.random.PCG64(seed)).integers(0, 2**64, size=(num_perm, 2), dtype=np.uint64)
    ab[:, 0] |= np.uint64(1)
    return ab


def signatures(shingle_sets: list[np.ndarray], seeds: np.ndarray) -> np.ndarray:
    """Returns the uint64 MinHash signatures (len(shingle_sets), len(seeds)), vectorised over sets.

    Every set must be non-empty. One pass per hash function over all shingles at once, then a
    segmented minimum (np.minimum.reduceat), so many small documents cost no Python loop each.
    """
    if any(len(s) == 0 for s in shingle_sets):
        raise ValueError("MinHash of an empty shingle set is undefined; skip documents without words")
    out = np.empty((len(shingle_sets), len(seeds)), dtype=np.uint64)
    if not shingle_sets:
        return out
    flat = np.concatenate(shingle_sets)
    starts = np.concatenate([[0], np.cumsum([len(s) for s in shingle_sets])[:-1]])
    for k, (a, b) in enumerate(seeds):
        out[:, k] = np.minimum.reduceat(flat * a + b, starts)
    return out


def signature(shingles: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """Returns the MinHash signature (len(seeds),) of one non-empty shingle set."""
    return signatures([shingles], seeds)[0]


def estimate_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Returns the fraction of equal signature entries (an unbiased Jaccard estimate)."""
    return float(np.mean(a == b))
