"""Stable, vectorised word and n-gram hashing shared by dedup and decontamination.

Hashes must be identical in every process (Beam workers included), so Python's salted `hash`
is never used: words are hashed with blake2b and n-grams combined with numpy uint64 arithmetic.
"""
from __future__ import annotations

import hashlib
import re

import numpy as np

WORD_RE = re.compile(r"\w+")
_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)
_word_cache: dict[str, int] = {}
_MAX_N = 64
_CACHE_LIMIT = 2_000_000


def normalized_words(text: str) -> list[str]:
    """Returns the lower-cased alphanumeric words of text (punctuation and spacing ignored)."""
    low = text.lower()
    if len(low) == len(text):  # the usual case: lower-casing maps characters one to one
        return WORD_RE.findall(low)
    # Rare expanding lower-casing (e.g. "İ"): lower word by word so spans still line up.
    return [m.group().lower() for m in WORD_RE.finditer(text)]


def word_spans(text: str) -> list[tuple[int, int]]:
    """Returns the (start, end) character offsets of each word of `normalized_words(text)`."""
    low = text.lower()
    return [m.span() for m in WORD_RE.finditer(low if len(low) == len(text) else text)]


def _blake64(word: str) -> int:
    return int.from_bytes(hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest(), "little")


def word_hashes(words: list[str]) -> np.ndarray:
    """Returns a stable uint64 hash per word."""
    cache = _word_cache
    if len(cache) > _CACHE_LIMIT:
        cache.clear()
    get = cache.get
    hs = [get(w) for w in words]
    for i, h in enumerate(hs):
        if h is None:
            hs[i] = cache[words[i]] = _blake64(words[i])
    return np.array(hs, dtype=np.uint64)


def mix64(x: np.ndarray) -> np.ndarray:
    """Returns splitmix64's finaliser of x: a bijection on uint64 with good avalanche."""
    # uint64 array arithmetic wraps modulo 2^64 silently, which is what we want.
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def ngram_hashes(hashes: np.ndarray, n: int) -> np.ndarray:
    """Returns one uint64 hash per word n-gram (position-sensitive), in order.

    A sequence shorter than n yields a single hash of the whole sequence (so short documents
    still have a shingle); an empty one yields none.
    """
    return ngram_hashes_batch([hashes], n)[0]


def ngram_hashes_batch(seqs: list[np.ndarray], n: int) -> list[np.ndarray]:
    """Returns `ngram_hashes(s, n)` for every word-hash sequence, vectorised across sequences."""
    if not 1 <= n <= _MAX_N:
        raise ValueError(f"n-gram size {n} must be in 1..{_MAX_N}")
    out: list[np.ndarray] = [np.empty(0, dtype=np.uint64)] * len(seqs)
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    # Sequences of length >= n: roll over their concatenation, then keep in-document windows.
    long_idx = np.nonzero(lengths >= n)[0]
    if len(long_idx):
        flat = np.concatenate([seqs[i] for i in long_idx]).astype(np.uint64, copy=False)
        count = len(flat) - n + 1
        acc = np.zeros(count, dtype=np.uint64)
        for j in range(n):
            acc = mix64(acc + flat[j:j + count] * _MULTIPLIERS[j])
        per_doc = lengths[long_idx] - n + 1
        doc_starts = np.concatenate([[0], np.cumsum(lengths[long_idx])[:-1]])
        within = np.arange(per_doc.sum()) - np.repeat(np.cumsum(per_doc) - per_doc, per_doc)
        grams = acc[np.repeat(doc_starts, per_doc) + within]
        for i, part in zip(long_idx, np.split(grams, np.cumsum(per_doc)[:-1])):
            out[i] = part
    # Shorter non-empty sequences hash whole, grouped by length so each group is one matrix.
    for m in np.unique(lengths[(lengths > 0) & (lengths < n)]):
        idx = np.nonzero(lengths == m)[0]
        mat = np.stack([seqs[i] for i in idx]).astype(np.uint64, copy=False)
        acc = np.zeros(len(idx), dtype=np.uint64)
        for j in range(int(m)):
            acc = mix64(acc + mat[:, j] * _MULTIPLIERS[j])
        for row, i in enumerate(idx):
            out[i] = acc[row:row + 1]
    return out


# Odd per-offset multipliers (fixed forever: changing them changes every stored hash).
_MULTIPLIERS = mix64(np.arange(1, _MAX_N + 1, dtype=np.uint64)) | np.uint64(1)


def shingles(text: str, n: int) -> np.ndarray:
    """Returns the sorted unique n-gram hashes of text's normalised words."""
    return shingles_batch([text], n)[0]


def shingles_batch(texts: list[str], n: int, unique: bool = True) -> list[np.ndarray]:
    """Returns `shingles(t, n)` for every text, hashing all texts' n-grams in one vectorised pass.

    unique=False skips sorting out repeats (MinHash does not need it; Jaccard does).
    """
    grams = ngram_hashes_batch([word_hashes(normalized_words(t)) for t in texts], n)
    return [np.unique(g) for g in grams] if unique else grams


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Returns |a & b| / |a | b| for two sorted unique hash arrays (0 when both are empty)."""
    if len(a) == 0 and len(b) == 0:
        return 0.0
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter / (len(a) + len(b) - inter)
