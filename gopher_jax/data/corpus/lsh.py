"""Locality-sensitive hashing over MinHash bands, and candidate pairs within buckets."""
from __future__ import annotations

import itertools
from typing import Hashable, Iterator, Sequence

import numpy as np

from gopher_jax.data.corpus.ngrams import mix64


def band_keys(sigs: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """Returns the (num_docs, bands) uint64 bucket keys of signatures (num_docs, bands * rows).

    A band's key hashes its rows and its band index, so equal keys mean (up to a 2^-64
    collision, removed later by exact Jaccard) equal rows in the same band.
    """
    sigs = np.atleast_2d(sigs)
    if bands * rows != sigs.shape[1]:
        raise ValueError(f"LSH bands x rows = {bands} x {rows} = {bands * rows} must equal the "
                         f"signature length {sigs.shape[1]}; set DedupConfig.num_perm = bands * rows")
    b = sigs.reshape(len(sigs), bands, rows)
    acc = np.broadcast_to(np.arange(bands, dtype=np.uint64), (len(sigs), bands)).copy()
    for r in range(rows):
        acc = mix64(acc ^ b[:, :, r])
    return acc


def bucket_pairs(members: Sequence[Hashable], max_all_pairs: int, window: int) -> Iterator[tuple]:
    """Yields candidate pairs (a, b), a < b, among the members of one bucket.

    Buckets up to max_all_pairs members yield all pairs; larger ones (boilerplate shared by
    thousands of pages) pair each member with the next `window` in sorted order, which keeps
    the work linear while still chaining a duplicate cluster into one connected component.
    """
    members = sorted(set(members))
    if len(members) <= max_all_pairs:
        yield from itertools.combinations(members, 2)
        return
    for i, a in enumerate(members):
        for b in members[i + 1:i + 1 + window]:
            yield (a, b)


def candidate_probability(j: float, bands: int, rows: int) -> float:
    """Returns the probability that a pair with Jaccard j shares at least one bucket."""
    return 1.0 - (1.0 - j ** rows) ** bands
